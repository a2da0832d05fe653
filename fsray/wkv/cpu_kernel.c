/* WKV7 on the CPU: the per-token recurrence in plain C, built by fsray/wkv/compiled.py at first use
 * and called through ctypes. The body lives in cpu_kernel.h, instantiated here for float and double
 * (double serves gradcheck). */

#include <stdlib.h>
#include <string.h>

#define MAX_N 64

#define REAL float
#define SUF f32
#include "cpu_kernel.h"
#undef REAL
#undef SUF

#define REAL double
#define SUF f64
#include "cpu_kernel.h"
#undef REAL
#undef SUF
