/* An open-loop HTTP/1.1 POST load generator in C, for a load generator that shares the cores with
 * the server it loads (benchmarks/graph_load.py --client c builds and runs it).
 *
 * The Python client (benchmarks/http1.py) spends 0.27-0.35 ms of CPU a request: half a core at
 * 1800 req/s, taken from the graph it measures. This one sends pre-built bytes from one thread with
 * epoll and costs the kernel's copies and little else.
 *
 *   openloop --target HOST PORT PATH [--target ...] --templates FILE --sends FILE --rid-prefix P
 *            --deadline-ms D --out FILE [--timeout-s 60] [--preopen K]
 *
 * templates FILE: uint32 count, then per template uint32 length + bytes of the body before the
 *   request id, uint32 length + bytes of the body after it (the id is spliced in as "P<i>", quoted).
 * sends FILE: float64 send offsets in seconds (request i is sent at t0 + sends[i], whatever the
 *   answers before it did: open loop), to target i % targets with template i % count.
 * out FILE: per request, in order: int32 status (0: failed: connect, reset, timeout, bad answer),
 *   float64 the send's offset from t0 (s), float64 latency (ms, send to the answer's last byte),
 *   uint32 body length, the body. Then on stdout one JSON line: {"cpu_s": user+system seconds of
 *   this process from t0 to the last answer (the load's cost, not the set-up's), "wall_s" (t0 to
 *   the last answer), "opened": connections opened}.
 * A connection carries one request at a time (no pipelining); one is opened when none is idle.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 64

typedef struct {
    struct sockaddr_in addr;
    char host[256];
    int port;
    char path[512];
    int *idle; /* stack of idle connection ids */
    int n_idle, cap_idle;
} Target;

enum { FREE, CONNECTING, SENDING, RECEIVING, IDLE };

typedef struct {
    int fd, state, target;
    long req; /* request in flight, -1 none */
    char *out; size_t out_len, out_off, out_cap;
    char *in; size_t in_len, in_cap;
    long head_end; /* offset past \r\n\r\n, -1 unknown */
    long clen; int chunked, close_after;
} Conn;

typedef struct { int32_t status; double sent, ms; char *body; uint32_t body_len; } Result;

static Target targets[MAX_TARGETS];
static int n_targets;
static Conn *conns;
static int n_conns, cap_conns;
static Result *res;
static long n_req, n_done;
static double *sends;
static char **t_head, **t_tail;
static uint32_t *t_head_len, *t_tail_len, n_tmpl;
static const char *rid_prefix = "r-";
static double deadline_ms = 100.0, timeout_s = 60.0, t0;
static int ep;
static long opened;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_s(void) { /* user + system seconds of this process */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what) { perror(what); exit(2); }

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("realloc");
    return q;
}

static void reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    *buf = xrealloc(*buf, c);
    *cap = c;
}

static void finish(Conn *c, int status, const char *body, size_t len) {
    Result *r = &res[c->req];
    r->status = status;
    r->ms = (now() - t0 - r->sent) * 1e3;
    if (len) {
        r->body = malloc(len);
        if (!r->body) die("malloc");
        memcpy(r->body, body, len);
    }
    r->body_len = (uint32_t)len;
    c->req = -1;
    n_done++;
}

static void drop(Conn *c) { /* close, and fail the request in flight */
    if (c->req >= 0) finish(c, 0, NULL, 0);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = FREE;
}

static int open_conn(int t) {
    int id = -1;
    for (int i = 0; i < n_conns; i++)
        if (conns[i].state == FREE) { id = i; break; }
    if (id < 0) {
        if (n_conns == cap_conns) {
            cap_conns = cap_conns ? 2 * cap_conns : 64;
            conns = xrealloc(conns, cap_conns * sizeof(Conn));
        }
        id = n_conns++;
        memset(&conns[id], 0, sizeof(Conn));
    }
    Conn *c = &conns[id];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->target = t;
    c->req = -1;
    c->state = CONNECTING;
    opened++;
    if (connect(c->fd, (struct sockaddr *)&targets[t].addr, sizeof targets[t].addr) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        c->state = FREE;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = (uint32_t)id};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    return id;
}

static void push_idle(int id) {
    Target *t = &targets[conns[id].target];
    if (t->n_idle == t->cap_idle) {
        t->cap_idle = t->cap_idle ? 2 * t->cap_idle : 64;
        t->idle = xrealloc(t->idle, t->cap_idle * sizeof(int));
    }
    t->idle[t->n_idle++] = id;
    conns[id].state = IDLE;
}

static void progress(int id);

static void dispatch(long i) {
    int t = (int)(i % n_targets), id = -1;
    Target *tg = &targets[t];
    while (tg->n_idle > 0) { /* the most recently used first: the least likely closed by the server */
        int k = tg->idle[--tg->n_idle];
        if (conns[k].state == IDLE && conns[k].target == t) { id = k; break; } /* else stale: closed since */
    }
    res[i].sent = now() - t0;
    if (id < 0 && (id = open_conn(t)) < 0) {
        res[i].status = 0;
        res[i].ms = 0;
        n_done++;
        return;
    }
    Conn *c = &conns[id];
    uint32_t k = (uint32_t)(i % n_tmpl);
    char rid[96];
    int rid_len = snprintf(rid, sizeof rid, "\"%s%ld\"", rid_prefix, i);
    size_t body = t_head_len[k] + rid_len + t_tail_len[k];
    char hdr[1024];
    int hdr_len = snprintf(hdr, sizeof hdr,
                           "POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-length: %zu\r\n"
                           "content-type: application/json\r\nx-deadline-ms: %g\r\n\r\n",
                           tg->path, tg->host, tg->port, body, deadline_ms);
    reserve(&c->out, &c->out_cap, hdr_len + body);
    char *p = c->out;
    memcpy(p, hdr, hdr_len); p += hdr_len;
    memcpy(p, t_head[k], t_head_len[k]); p += t_head_len[k];
    memcpy(p, rid, rid_len); p += rid_len;
    memcpy(p, t_tail[k], t_tail_len[k]);
    c->out_len = hdr_len + body;
    c->out_off = 0;
    c->in_len = 0;
    c->head_end = -1;
    c->req = i;
    if (c->state == IDLE) c->state = SENDING; /* else CONNECTING: sent once connected */
    progress(id);
}

/* A chunked body's payload length, -1 while its last chunk is not in; with join, the payload is
 * also moved to the front of body (in place: only call it so once the whole body is there). */
static long chunks(char *body, size_t have, int join) {
    size_t r = 0, w = 0;
    for (;;) {
        char *eol = memmem(body + r, have - r, "\r\n", 2);
        if (!eol) return -1;
        long size = strtol(body + r, NULL, 16);
        size_t start = eol - body + 2;
        if (start + size + 2 > have) return -1;
        if (size == 0) return (long)w;
        if (join) memmove(body + w, body + start, size);
        w += size;
        r = start + size + 2;
    }
}

/* Parse what has arrived; 1 when the answer is complete (and finished), 0 when more is needed. */
static int parse(Conn *c) {
    if (c->head_end < 0) {
        char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!e) return 0;
        c->head_end = e - c->in + 4;
        c->clen = -1; c->chunked = 0; c->close_after = 0;
        char *line = memchr(c->in, '\n', c->head_end);
        while (line && line + 1 < c->in + c->head_end) {
            char *s = line + 1, *eol = memchr(s, '\n', c->in + c->head_end - s);
            if (!eol) break;
            if (!strncasecmp(s, "content-length:", 15)) c->clen = strtol(s + 15, NULL, 10);
            else if (!strncasecmp(s, "connection:", 11)) c->close_after = memmem(s, eol - s, "close", 5) != NULL;
            else if (!strncasecmp(s, "transfer-encoding:", 18)) c->chunked = memmem(s, eol - s, "chunked", 7) != NULL;
            line = eol;
        }
    }
    int status = 0;
    if (c->in_len >= 12 && !strncmp(c->in, "HTTP/1.", 7)) status = atoi(c->in + 9);
    char *body = c->in + c->head_end;
    size_t have = c->in_len - c->head_end;
    if (c->chunked) { /* de-chunked in place only once the last chunk is in (they may come apart) */
        if (chunks(body, have, 0) < 0) return 0;
        finish(c, status, body, (size_t)chunks(body, have, 1));
        return 1;
    }
    if (c->clen < 0) return 0; /* until the server closes */
    if (have < (size_t)c->clen) return 0;
    finish(c, status, body, c->clen);
    return 1;
}

static void progress(int id) {
    Conn *c = &conns[id];
    if (c->state == CONNECTING) {
        int err = 0; socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) { drop(c); return; }
        struct sockaddr_in peer; socklen_t pl = sizeof peer;
        if (getpeername(c->fd, (struct sockaddr *)&peer, &pl) < 0) return; /* not connected yet */
        if (c->req < 0) { push_idle(id); return; }
        c->state = SENDING;
    }
    int send_failed = 0;
    if (c->state == SENDING) {
        while (c->out_off < c->out_len) {
            ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (k < 0) {
                send_failed = errno != EAGAIN;
                break;
            }
            c->out_off += k;
        }
        if (c->out_off == c->out_len) c->state = RECEIVING;
    }
    /* Read while sending too: a server may answer before it has the whole body (a proxy that
     * sheds on the headers) and then close; that answer counts, the connection does not go on. */
    if (c->state == SENDING || c->state == RECEIVING || c->state == IDLE) {
        int closed = 0;
        for (;;) {
            reserve(&c->in, &c->in_cap, c->in_len + 65536);
            ssize_t k = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (k < 0 && errno == EAGAIN) break;
            if (k <= 0) { closed = 1; break; }
            if (c->state == IDLE) { drop(c); return; } /* bytes nobody asked for */
            c->in_len += k;
        }
        if (c->state == IDLE) {
            if (closed) drop(c);
            return;
        }
        if (parse(c)) { /* answered: the request is finished, whatever the connection does next */
            if (c->close_after || closed || send_failed || c->state == SENDING) drop(c);
            else push_idle(id);
            return;
        }
        if (closed && c->head_end >= 0 && c->clen < 0 && !c->chunked) { /* an answer without a length ends here */
            finish(c, atoi(c->in + 9), c->in + c->head_end, c->in_len - c->head_end);
            drop(c);
            return;
        }
        if (closed || send_failed) drop(c); /* no answer: the request failed */
    }
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*len ? *len : 1);
    if (!b || fread(b, 1, *len, f) != *len) die(path);
    fclose(f);
    return b;
}

static uint32_t u32(const char **p) { uint32_t v; memcpy(&v, *p, 4); *p += 4; return v; }

int main(int argc, char **argv) {
    const char *tmpl_path = NULL, *sends_path = NULL, *out_path = NULL;
    int preopen = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--target") && i + 3 < argc) {
            if (n_targets == MAX_TARGETS) { fprintf(stderr, "more than %d targets\n", MAX_TARGETS); return 2; }
            Target *t = &targets[n_targets++];
            snprintf(t->host, sizeof t->host, "%s", argv[i + 1]);
            t->port = atoi(argv[i + 2]);
            snprintf(t->path, sizeof t->path, "%s", argv[i + 3]);
            struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
            if (getaddrinfo(t->host, NULL, &hints, &ai)) { fprintf(stderr, "cannot resolve %s\n", t->host); return 2; }
            t->addr = *(struct sockaddr_in *)ai->ai_addr;
            t->addr.sin_port = htons((uint16_t)t->port);
            freeaddrinfo(ai);
            i += 3;
        } else if (!strcmp(argv[i], "--templates") && i + 1 < argc) tmpl_path = argv[++i];
        else if (!strcmp(argv[i], "--sends") && i + 1 < argc) sends_path = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--rid-prefix") && i + 1 < argc) rid_prefix = argv[++i];
        else if (!strcmp(argv[i], "--deadline-ms") && i + 1 < argc) deadline_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--timeout-s") && i + 1 < argc) timeout_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--preopen") && i + 1 < argc) preopen = atoi(argv[++i]);
        else { fprintf(stderr, "openloop: unknown or incomplete argument %s\n", argv[i]); return 2; }
    }
    if (!n_targets || !tmpl_path || !sends_path || !out_path) {
        fprintf(stderr, "openloop: --target, --templates, --sends and --out are required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    size_t len;
    const char *tb = read_file(tmpl_path, &len), *p = tb;
    n_tmpl = u32(&p);
    if (!n_tmpl) { fprintf(stderr, "%s: no templates\n", tmpl_path); return 2; }
    t_head = malloc(n_tmpl * sizeof(char *)); t_tail = malloc(n_tmpl * sizeof(char *));
    t_head_len = malloc(n_tmpl * 4); t_tail_len = malloc(n_tmpl * 4);
    for (uint32_t k = 0; k < n_tmpl; k++) {
        t_head_len[k] = u32(&p); t_head[k] = (char *)p; p += t_head_len[k];
        t_tail_len[k] = u32(&p); t_tail[k] = (char *)p; p += t_tail_len[k];
        if ((size_t)(p - tb) > len) { fprintf(stderr, "%s: truncated\n", tmpl_path); return 2; }
    }
    sends = (double *)read_file(sends_path, &len);
    n_req = (long)(len / sizeof(double));
    res = calloc(n_req ? n_req : 1, sizeof(Result));
    if (!res) die("calloc");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    for (int t = 0; t < n_targets; t++)
        for (int k = 0; k < preopen; k++) open_conn(t);
    /* let the pre-opened connections finish connecting before the clock starts */
    struct epoll_event evs[256];
    double until = now() + 0.3;
    while (now() < until) {
        int n = epoll_wait(ep, evs, 256, 10);
        for (int e = 0; e < n; e++) progress((int)evs[e].data.u32);
    }
    double cpu_before = cpu_s();
    t0 = now() + 0.05;
    long next = 0;
    double last_progress = t0;
    while (n_done < n_req) {
        double t = now();
        while (next < n_req && t0 + sends[next] <= t) dispatch(next++);
        double wait = next < n_req ? t0 + sends[next] - now() : 0.05;
        if (wait < 0) wait = 0;
        struct timespec ts = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (time_t)wait) * 1e9)};
        long before = n_done;
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        if (n < 0 && errno != EINTR) die("epoll_pwait2");
        for (int e = 0; e < n; e++) progress((int)evs[e].data.u32);
        if (n_done != before || next < n_req) last_progress = now();
        else if (now() - last_progress > timeout_s) { /* the rest never answered */
            for (int i = 0; i < n_conns; i++)
                if (conns[i].state == SENDING || conns[i].state == RECEIVING || conns[i].state == CONNECTING) drop(&conns[i]);
        }
    }
    double wall = now() - t0;
    FILE *o = fopen(out_path, "wb");
    if (!o) die(out_path);
    for (long i = 0; i < n_req; i++) {
        fwrite(&res[i].status, 4, 1, o);
        fwrite(&res[i].sent, 8, 1, o);
        fwrite(&res[i].ms, 8, 1, o);
        fwrite(&res[i].body_len, 4, 1, o);
        if (res[i].body_len) fwrite(res[i].body, 1, res[i].body_len, o);
    }
    if (fclose(o)) die(out_path);
    printf("{\"cpu_s\": %.4f, \"wall_s\": %.3f, \"opened\": %ld}\n", cpu_s() - cpu_before, wall, opened);
    return 0;
}
