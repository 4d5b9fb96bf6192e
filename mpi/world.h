/* The distributed run object: communicators and roles. Internal to mpi/. */
#ifndef KD_MPI_WORLD_H
#define KD_MPI_WORLD_H

#include "kindling_mpi.h"

struct kd_dist {
    kd_dist_config cfg;
    MPI_Comm comm;        /* duplicate of the caller's communicator */
    MPI_Comm workers;     /* worker ranks only; MPI_COMM_NULL on servers */
    int rank, size;
    int servers, num_workers;
    int worker_index;     /* -1 on servers */
    kd_dist_stats stats;
};

/* Error handler choice: communicators return errors so messages name the
 * call; the driver turns them into kd_status. */
kd_status kd_mpi_check(int mpi_rc, const char *what);

#endif
