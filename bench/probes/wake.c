// Cost of waking a sleeping thread: main sleeps PAUSE us, then signals a condvar a parked
// thread waits on; that thread signals back. Round trip measured.
//   cc -O2 -pthread -o /tmp/wake bench/probes/wake.c && /tmp/wake 0 2000 && /tmp/wake 20000 100
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c1 = PTHREAD_COND_INITIALIZER, c2 = PTHREAD_COND_INITIALIZER;
static int turn = 0;
static void *other(void *a) {
  for (;;) {
    pthread_mutex_lock(&m);
    while (turn != 1) pthread_cond_wait(&c1, &m);
    turn = 2; pthread_cond_signal(&c2);
    pthread_mutex_unlock(&m);
  }
}
static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *a, const void *b) { double x = *(double*)a, y = *(double*)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
  int pause = atoi(argv[1]), n = atoi(argv[2]);
  pthread_t t; pthread_create(&t, 0, other, 0);
  double *r = malloc(n * sizeof *r);
  for (int i = 0; i < n; i++) {
    if (pause) usleep(pause);
    double s = now();
    pthread_mutex_lock(&m); turn = 1; pthread_cond_signal(&c1);
    while (turn != 2) pthread_cond_wait(&c2, &m);
    turn = 0; pthread_mutex_unlock(&m);
    r[i] = now() - s;
  }
  qsort(r, n, sizeof *r, cmp);
  printf("pause %d us: round trip p50 %.1f us p90 %.1f us\n", pause, r[n/2], r[n*9/10]);
}
