/* The FMA peak of one core, measured (pipeline/peak.py): ten independent chains of fused multiply-adds on native
 * vectors, held in registers, enough to cover the FMA units' latency on x86-64 (AVX2/AVX-512) and aarch64 (NEON).
 * Built by peak.py with the host C compiler at -O2 -march=native; returns a value so nothing is optimised away. */
#if defined(__AVX512F__)
#define VEC_BYTES 64
#elif defined(__AVX__)
#define VEC_BYTES 32
#else
#define VEC_BYTES 16
#endif

typedef float vec __attribute__((vector_size(VEC_BYTES)));

int fma_lanes(void) { return VEC_BYTES / sizeof(float); }

int fma_chains(void) { return 10; }

float fma_run(long iters, float m, float c) {
  vec mv = {0}, cv = {0};
  mv += m;
  cv += c;
  vec a0 = cv, a1 = cv + 1, a2 = cv + 2, a3 = cv + 3, a4 = cv + 4, a5 = cv + 5, a6 = cv + 6, a7 = cv + 7,
      a8 = cv + 8, a9 = cv + 9;
  for (long i = 0; i < iters; ++i) {
    a0 = a0 * mv + cv; a1 = a1 * mv + cv; a2 = a2 * mv + cv; a3 = a3 * mv + cv; a4 = a4 * mv + cv;
    a5 = a5 * mv + cv; a6 = a6 * mv + cv; a7 = a7 * mv + cv; a8 = a8 * mv + cv; a9 = a9 * mv + cv;
  }
  vec s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
  float total = 0;
  for (int l = 0; l < VEC_BYTES / (int)sizeof(float); ++l) total += s[l];
  return total;
}
