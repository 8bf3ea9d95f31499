/* A stand-in for compiled kernels: the packed calling convention. */
void bitloom_test_axpy(void **bindings) {
  const float *x = (const float *)bindings[0];
  float *y = (float *)bindings[1];
  const long *n = (const long *)bindings[2];
  for (long i = 0; i < *n; ++i)
    y[i] += 2.0f * x[i];
}
