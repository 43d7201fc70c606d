/* Memory read bandwidth with 1 and 2 threads, numba-free: is the 2-thread ceiling the machine's?
 *
 * Built and run by `python -m bench.bench_kernels --membw` (gcc -O3 -march=native -fopenmp, into a
 * temporary directory; never at import or test time). Usage:
 *
 *     membw BYTES [BYTES ...] ROUNDS REPEATS
 *
 * For each buffer size and page size (4 KiB pages, and 2 MiB transparent huge pages asked for with
 * madvise(MADV_HUGEPAGE) as numpy does for its arrays of 4 MiB and more), ROUNDS rounds; in each
 * round 1 and 2 threads are timed one after the other,
 * REPEATS calls each, every call preceded by reading 128 MiB of other memory (untimed) so the buffer
 * comes from DRAM, as in the kernels' benchmark. A call: each thread sums (bitwise or of 64-bit words,
 * which -O3 vectorizes to 256-bit loads) one contiguous half of the buffer (static schedule). Output,
 * one line per size, pages, round and thread count:
 * "<bytes> <4k|huge> <round> <threads> <median seconds> <huge KiB the buffer got>".
 */
#define _GNU_SOURCE
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define EVICT_BYTES (128u << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t read_buffer(const uint64_t *restrict a, size_t words, int threads) {
    uint64_t total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : total)
    for (size_t i = 0; i < words; i++) total |= a[i];
    return total;
}

/* AnonHugePages of the mapping that holds p, from /proc/self/smaps (KiB; -1 if not found) */
static long huge_kib(const void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int inside = 0;
    long kib = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        } else if (inside && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) {
            break;
        }
    }
    fclose(f);
    return kib;
}

static int compare(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: membw BYTES [BYTES ...] ROUNDS REPEATS\n");
        return 2;
    }
    int rounds = atoi(argv[argc - 2]), repeats = atoi(argv[argc - 1]);
    if (rounds < 1 || repeats < 1) {
        fprintf(stderr, "membw: ROUNDS and REPEATS must be >= 1\n");
        return 2;
    }
    size_t evict_words = EVICT_BYTES / 8;
    uint64_t *evict = malloc(EVICT_BYTES);
    double *samples = malloc(sizeof(double) * (size_t)repeats);
    if (!evict || !samples) return 1;
    memset(evict, 1, EVICT_BYTES);
    volatile uint64_t sink = 0;
    for (int s = 1; s < argc - 2; s++) {
        size_t bytes = strtoull(argv[s], NULL, 10) & ~(size_t)63, words = bytes / 8;
        for (int huge = 0; huge <= 1; huge++) {
            size_t align = (size_t)2 << 20, mapped = bytes + align;
            char *region = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (region == MAP_FAILED) return 1;
            uint64_t *a = (uint64_t *)(region + (align - (uintptr_t)region % align) % align);
            madvise(a, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
            memset(a, 1, bytes); /* fault every page in before timing */
            long kib = huge_kib(a);
            for (int t = 1; t <= 2; t++) sink |= read_buffer(a, words, t); /* start both OpenMP teams */
            for (int r = 0; r < rounds; r++) {
                for (int t = 1; t <= 2; t++) {
                    for (int k = 0; k < repeats; k++) {
                        sink |= read_buffer(evict, evict_words, 2);
                        double start = now();
                        sink |= read_buffer(a, words, t);
                        samples[k] = now() - start;
                    }
                    qsort(samples, (size_t)repeats, sizeof(double), compare);
                    printf("%zu %s %d %d %.9f %ld\n", bytes, huge ? "huge" : "4k", r, t, samples[repeats / 2], kib);
                    fflush(stdout);
                }
            }
            munmap(region, mapped);
        }
    }
    free(evict);
    free(samples);
    return sink == 42 ? 3 : 0; /* keeps the reads; a buffer of ones never ors to 42 */
}
