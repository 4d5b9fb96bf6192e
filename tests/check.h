/* A tiny test harness: CHECK records a failure and continues; the test's
 * main returns check_summary(). Prints "N passed, N failed"; a test in
 * which no check ran fails too (it tested nothing). */
#ifndef KD_CHECK_H
#define KD_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed_, check_failed_;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) {                                                            \
            check_passed_++;                                                   \
        } else {                                                               \
            check_failed_++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* A kd_status call that must succeed. */
#define CHECK_OK(expr)                                                         \
    do {                                                                       \
        kd_status check_s_ = (expr);                                           \
        CHECK(check_s_ == KD_OK, "%s -> %s: %s", #expr,                        \
              kd_status_name(check_s_), kd_last_error());                      \
    } while (0)

/* A call that must fail with `status` and a message containing `needle`. */
#define CHECK_FAILS(expr, status, needle)                                      \
    do {                                                                       \
        kd_status check_s_ = (expr);                                           \
        CHECK(check_s_ == (status) && strstr(kd_last_error(), (needle)),       \
              "%s -> %s (%s), wanted %s with '%s'", #expr,                     \
              kd_status_name(check_s_), kd_last_error(),                       \
              kd_status_name(status), (needle));                               \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                  \
    do {                                                                       \
        double check_a_ = (a), check_b_ = (b);                                 \
        CHECK(fabs(check_a_ - check_b_) <= (tol), "%g vs %g (tol %g)",         \
              check_a_, check_b_, (double)(tol));                              \
    } while (0)

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    if (check_passed_ + check_failed_ == 0) {
        fprintf(stderr, "FAIL: no check ran\n");
        return 1;
    }
    return check_failed_ ? 1 : 0;
}

#endif
