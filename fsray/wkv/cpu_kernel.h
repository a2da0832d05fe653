/* WKV7 per-token recurrence and its backward for one dtype; included by cpu_kernel.c once per REAL.
 *
 * Shapes as in fsray/wkv/reference.py: r, w, k, v, a, b, y, u are [B, T, H, N] (w = exp(logw), u_t =
 * S_{t-1} a_t saved by the forward); s0, sT, ds0 are [B, H, N, N] indexed [value i, key j]; states are
 * [B, H, n_states, N, N]: every S_{t-1} for t = 0..T when `full`, else every C-th one (recomputed
 * stretch by stretch in the backward).
 *
 *   forward   S_t = S_{t-1} diag(w_t) + u_t b_t^T + v_t k_t^T,   y_t = S_t r_t
 *   backward  dS += dy_t r_t^T;  dr_t = S_t^T dy_t;  dv_t = dS k_t;  du = dS b_t
 *             dk_t = dS^T v_t;  db_t = dS^T u_t;  dw_t = colsum(dS * S_{t-1});  da_t = S_{t-1}^T du
 *             dS <- dS diag(w_t) + du a_t^T
 *
 * Every head is independent: a call handles heads [bh_begin, bh_end) so Python can split the work
 * across threads. The per-head functions are always inlined into a switch on N, so the common head
 * sizes get loops of constant length the compiler unrolls and vectorises.
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

static inline __attribute__((always_inline)) void FN(fwd_head_)(
    const long N, const long T, const long ts, const REAL *restrict r, const REAL *restrict w,
    const REAL *restrict k, const REAL *restrict v, const REAL *restrict a, const REAL *restrict b,
    const REAL *restrict s0, REAL *restrict y, REAL *restrict sT, REAL *restrict u, REAL *restrict st,
    const long C, const int full)
{
    REAL S[MAX_N * MAX_N];
    const long NN = N * N;
    memcpy(S, s0, NN * sizeof(REAL));
    for (long t = 0; t < T; t++) {
        if (full)
            memcpy(st + t * NN, S, NN * sizeof(REAL));
        else if (t % C == 0)
            memcpy(st + (t / C) * NN, S, NN * sizeof(REAL));
        const REAL *rt = r + t * ts, *wt = w + t * ts, *kt = k + t * ts, *vt = v + t * ts;
        const REAL *at = a + t * ts, *bt = b + t * ts;
        REAL *ut = u + t * ts, *yt = y + t * ts;
        for (long i = 0; i < N; i++) {
            REAL acc = 0;
            for (long j = 0; j < N; j++)
                acc += S[i * N + j] * at[j];
            ut[i] = acc;
        }
        for (long i = 0; i < N; i++) {
            const REAL ui = ut[i], vi = vt[i];
            REAL acc = 0;
            for (long j = 0; j < N; j++) {
                const REAL s = S[i * N + j] * wt[j] + ui * bt[j] + vi * kt[j];
                S[i * N + j] = s;
                acc += s * rt[j];
            }
            yt[i] = acc;
        }
    }
    if (full)
        memcpy(st + T * NN, S, NN * sizeof(REAL));
    memcpy(sT, S, NN * sizeof(REAL));
}

static inline __attribute__((always_inline)) void FN(bwd_head_)(
    const long N, const long T, const long ts, const REAL *restrict r, const REAL *restrict w,
    const REAL *restrict k, const REAL *restrict v, const REAL *restrict a, const REAL *restrict b,
    const REAL *restrict u, const REAL *restrict st_saved, const long n_states, const REAL *restrict dy,
    const REAL *restrict dsT, const long C, const int full, REAL *restrict dr, REAL *restrict dw,
    REAL *restrict dk, REAL *restrict dv, REAL *restrict da, REAL *restrict db, REAL *restrict ds0,
    REAL *restrict scratch)
{
    REAL dS[MAX_N * MAX_N], du[MAX_N];
    REAL cr[MAX_N], ck[MAX_N], cb[MAX_N], cw[MAX_N], ca[MAX_N];
    const long NN = N * N;
    memcpy(dS, dsT, NN * sizeof(REAL));
    const long n_stretch = full ? 1 : n_states;
    for (long c = n_stretch - 1; c >= 0; c--) {
        long t0, t1;
        const REAL *states;
        if (full) { /* S_{t-1} for t = 0..T are all stored: nothing to recompute */
            t0 = 0;
            t1 = T;
            states = st_saved;
        } else { /* recompute the stretch's states from its checkpoint */
            t0 = c * C;
            t1 = t0 + C < T ? t0 + C : T;
            memcpy(scratch, st_saved + c * NN, NN * sizeof(REAL));
            for (long t = t0; t < t1; t++) {
                const REAL *S = scratch + (t - t0) * NN;
                REAL *Sn = scratch + (t - t0 + 1) * NN;
                const REAL *wt = w + t * ts, *kt = k + t * ts, *vt = v + t * ts, *bt = b + t * ts;
                const REAL *ut = u + t * ts;
                for (long i = 0; i < N; i++) {
                    const REAL ui = ut[i], vi = vt[i];
                    for (long j = 0; j < N; j++)
                        Sn[i * N + j] = S[i * N + j] * wt[j] + ui * bt[j] + vi * kt[j];
                }
            }
            states = scratch;
        }
        for (long t = t1 - 1; t >= t0; t--) {
            const REAL *Sp = states + (t - t0) * NN, *Sc = states + (t - t0 + 1) * NN;
            const REAL *rt = r + t * ts, *wt = w + t * ts, *kt = k + t * ts, *vt = v + t * ts;
            const REAL *at = a + t * ts, *bt = b + t * ts, *ut = u + t * ts, *dyt = dy + t * ts;
            for (long j = 0; j < N; j++)
                cr[j] = ck[j] = cb[j] = cw[j] = ca[j] = 0;
            for (long i = 0; i < N; i++) {
                /* row i of dS += dy r^T, and its sums against k (dv) and b (du) */
                const REAL dyi = dyt[i], vi = vt[i], ui = ut[i];
                REAL acc_v = 0, acc_u = 0;
                for (long j = 0; j < N; j++) {
                    const REAL d = dS[i * N + j] + dyi * rt[j];
                    dS[i * N + j] = d;
                    acc_v += d * kt[j];
                    acc_u += d * bt[j];
                }
                dv[t * ts + i] = acc_v;
                du[i] = acc_u;
                /* row i's share of the column sums, then dS_{t-1} = dS diag(w) + du a^T */
                for (long j = 0; j < N; j++) {
                    const REAL d = dS[i * N + j], sp = Sp[i * N + j];
                    cr[j] += Sc[i * N + j] * dyi;
                    ck[j] += d * vi;
                    cb[j] += d * ui;
                    cw[j] += d * sp;
                    ca[j] += sp * acc_u;
                    dS[i * N + j] = d * wt[j] + acc_u * at[j];
                }
            }
            for (long j = 0; j < N; j++) {
                dr[t * ts + j] = cr[j];
                dk[t * ts + j] = ck[j];
                db[t * ts + j] = cb[j];
                dw[t * ts + j] = cw[j];
                da[t * ts + j] = ca[j];
            }
        }
    }
    memcpy(ds0, dS, NN * sizeof(REAL));
}

/* Dispatch on N so 8/16/32/64 compile to constant-length loops; other N <= MAX_N run the generic one. */
#define BY_N(CALL)                                                                                    \
    switch (N) {                                                                                      \
    case 8: CALL(8); break;                                                                           \
    case 16: CALL(16); break;                                                                         \
    case 32: CALL(32); break;                                                                         \
    case 64: CALL(64); break;                                                                         \
    default: CALL(N); break;                                                                          \
    }

int FN(wkv7_forward_)(const long B, const long T, const long H, const long N, const long bh_begin,
                      const long bh_end, const REAL *r, const REAL *w, const REAL *k, const REAL *v,
                      const REAL *a, const REAL *b, const REAL *s0, REAL *y, REAL *sT, REAL *u,
                      REAL *states, const long n_states, const long C, const int full)
{
    if (N > MAX_N) return -1;
    const long ts = H * N, NN = N * N;
    for (long bh = bh_begin; bh < bh_end; bh++) {
        const long bi = bh / H, h = bh % H, off = bi * T * ts + h * N;
#define FWD(n)                                                                                        \
    FN(fwd_head_)(n, T, ts, r + off, w + off, k + off, v + off, a + off, b + off, s0 + bh * NN, y + off, \
                  sT + bh * NN, u + off, states + bh * n_states * NN, C, full)
        BY_N(FWD)
#undef FWD
    }
    return 0;
}

int FN(wkv7_backward_)(const long B, const long T, const long H, const long N, const long bh_begin,
                       const long bh_end, const REAL *r, const REAL *w, const REAL *k, const REAL *v,
                       const REAL *a, const REAL *b, const REAL *u, const REAL *states, const long n_states,
                       const REAL *dy, const REAL *dsT, const long C, const int full, REAL *dr, REAL *dw,
                       REAL *dk, REAL *dv, REAL *da, REAL *db, REAL *ds0)
{
    if (N > MAX_N) return -1;
    const long ts = H * N, NN = N * N;
    REAL *scratch = NULL;
    if (!full) {
        scratch = (REAL *)malloc((size_t)(C + 1) * NN * sizeof(REAL));
        if (!scratch) return -2;
    }
    for (long bh = bh_begin; bh < bh_end; bh++) {
        const long bi = bh / H, h = bh % H, off = bi * T * ts + h * N;
#define BWD(n)                                                                                        \
    FN(bwd_head_)(n, T, ts, r + off, w + off, k + off, v + off, a + off, b + off, u + off,               \
                  states + bh * n_states * NN, n_states, dy + off, dsT + bh * NN, C, full, dr + off,     \
                  dw + off, dk + off, dv + off, da + off, db + off, ds0 + bh * NN, scratch)
        BY_N(BWD)
#undef BWD
    }
    free(scratch);
    return 0;
}

#undef BY_N
