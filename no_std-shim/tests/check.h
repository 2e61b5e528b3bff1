/* The checks both C tests count and report: CHECK(cond) and CHECK_RC(expr, want). */
#ifndef PRECOPY_TEST_CHECK_H
#define PRECOPY_TEST_CHECK_H

#include <stdio.h>

#include "precopy.h"

static int checks, failures;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        checks++;                                                                         \
        if (!(cond)) {                                                                    \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

#define CHECK_RC(expr, want)                                                              \
    do {                                                                                  \
        int rc_ = (expr);                                                                 \
        int want_ = (want);                                                               \
        checks++;                                                                         \
        if (rc_ != want_) {                                                               \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__,    \
                    __LINE__, #expr, rc_, precopy_strerror(rc_), want_,                   \
                    precopy_strerror(want_));                                             \
        }                                                                                 \
    } while (0)

#endif
