/*
 * How much does a protocol Sync cost Postgres? The proxy's per-request transaction
 * (BEGIN; set_config x2; one read; COMMIT) sent as one libpq pipeline, ended by one
 * Sync, or with a Sync after every statement (what a driver that syncs each statement,
 * like tokio-postgres, sends), or without BEGIN/COMMIT (an implicit transaction, what
 * the proxy sends since pgwire.rs). Several processes, one connection each, for a fixed
 * time; prints transactions per second and, when the server runs on this machine, the
 * server's CPU time per transaction (its backends' /proc stat). Every variant writes all its statements before
 * reading any answer, so only the number of Syncs differs. docs/benchmarks.md step 10.
 *
 *   cc -O2 -o syncs syncs.c -I"$(pg_config --includedir)" -lpq   (Debian: libpq-dev)
 *   ./syncs 'host=127.0.0.1 port=5432 dbname=postgres' 4 5
 *       conninfo, processes, seconds
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void prepare(PGconn *c, const char *name, const char *sql) {
    PGresult *r = PQprepare(c, name, sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "prepare %s: %s", name, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

/* CPU ticks (user + system) a local backend has used so far; 0 if not readable. */
static long backend_ticks(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long utime = 0, stime = 0;
    /* fields 14 and 15, after the command name in parentheses */
    if (fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) != 2)
        utime = stime = 0;
    fclose(f);
    return utime + stime;
}

struct result {
    long tx, ticks;
};

/* One process: transactions done in `secs`, and its backend's CPU ticks meanwhile. */
static struct result run(const char *conninfo, int sync_each, int explicit_tx, double secs) {
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "%s", PQerrorMessage(c));
        exit(1);
    }
    prepare(c, "b", "begin");
    prepare(c, "a", "select pg_catalog.set_config('x.claims', $1, true), pg_catalog.set_config('statement_timeout', '5000', true)");
    prepare(c, "q", "select jsonb_build_object('id', $1::int, 'claims', current_setting('x.claims'))::text");
    prepare(c, "c", "commit");
    if (!PQenterPipelineMode(c)) {
        fprintf(stderr, "pipeline mode: %s", PQerrorMessage(c));
        exit(1);
    }
    const char *names[4] = {"b", "a", "q", "c"};
    int pid = PQbackendPID(c);
    long ticks0 = backend_ticks(pid);
    long n = 0;
    char id[24];
    double end = now() + secs;
    while (now() < end) {
        snprintf(id, sizeof id, "%ld", n % 1000);
        const char *claims[1] = {"{\"role\":\"baas_user\"}"};
        const char *ids[1] = {id};
        int syncs = 0;
        for (int i = 0; i < 4; i++) {
            if (!explicit_tx && (i == 0 || i == 3))
                continue;
            const char **vals = i == 1 ? claims : i == 2 ? ids : NULL;
            PQsendQueryPrepared(c, names[i], vals ? 1 : 0, vals, NULL, NULL, 0);
            if (sync_each) {
                PQpipelineSync(c);
                syncs++;
            }
        }
        if (!sync_each) {
            PQpipelineSync(c);
            syncs++;
        }
        for (int got = 0; got < syncs;) {
            PGresult *r = PQgetResult(c);
            if (!r)
                continue;
            ExecStatusType s = PQresultStatus(r);
            if (s == PGRES_PIPELINE_SYNC)
                got++;
            else if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
                fprintf(stderr, "error: %s", PQresultErrorMessage(r));
                exit(1);
            }
            PQclear(r);
        }
        n++;
    }
    struct result res = {n, backend_ticks(pid) - ticks0};
    PQfinish(c);
    return res;
}

static void variant(const char *label, const char *conninfo, int procs, double secs, int sync_each, int explicit_tx) {
    int fd[2];
    fflush(stdout);
    if (pipe(fd) != 0)
        exit(1);
    for (int p = 0; p < procs; p++) {
        if (fork() == 0) {
            struct result r = run(conninfo, sync_each, explicit_tx, secs);
            if (write(fd[1], &r, sizeof r) != sizeof r)
                _exit(1);
            _exit(0);
        }
    }
    long total = 0, ticks = 0;
    for (int p = 0; p < procs; p++) {
        struct result r;
        if (read(fd[0], &r, sizeof r) != sizeof r)
            exit(1);
        total += r.tx;
        ticks += r.ticks;
    }
    while (wait(NULL) > 0) {
    }
    close(fd[0]);
    close(fd[1]);
    double us = total && ticks ? ticks * 1e6 / sysconf(_SC_CLK_TCK) / total : 0;
    printf("%-62s %8.0f tx/s  %5.1f us server CPU/tx\n", label, total / secs, us);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CONNINFO PROCESSES SECONDS\n", argv[0]);
        return 2;
    }
    int procs = atoi(argv[2]);
    double secs = atof(argv[3]);
    variant("BEGIN; set_config; read; COMMIT, a Sync after each (4 Syncs)", argv[1], procs, secs, 1, 1);
    variant("BEGIN; set_config; read; COMMIT, one Sync", argv[1], procs, secs, 0, 1);
    variant("set_config; read, one Sync (implicit transaction)", argv[1], procs, secs, 0, 0);
    return 0;
}
