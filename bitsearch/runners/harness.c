/*
 * bitsearch measurement harness: loads position-independent machine-code blobs, lays out guarded
 * buffers, runs a call sequence once for outputs, then (optionally) times it.
 *
 * Self-contained C99 + POSIX (+ a little GNU: sched_setaffinity, ucontext registers); builds and
 * runs on x86-64 and AArch64 Linux, natively or as a static binary under qemu.
 *
 * Usage: harness JOBFILE OUTDIR [--timing] [--min-time S] [--repeats N] [--warmup W] [--core C]
 *
 * Job file (text, one record a line, '#' starts a comment; file names relative to JOBFILE's
 * directory, without spaces):
 *
 *   version 1
 *   code <i> <file> <nbytes>            machine code, entry point at offset 0
 *   buf <i> in <file> <nbytes>          input buffer (read-only while the code runs)
 *   buf <i> out <nbytes>                output buffer, zero-filled
 *   call <code-index> [buf:<i> | int:<u64>]...   at most 6 integer-class arguments
 *
 * Indices of code blobs and buffers are dense and in order (0, 1, 2, ...).  Every function is
 * called as uint64_t f(uint64_t a0, ..., uint64_t a5), unused arguments 0.
 *
 * Memory layout of a buffer: [guard page][canary slack | data][guard page].  The data END is
 * flush against a PROT_NONE page (so any access past the end faults); the slack between the
 * page start and the data start is filled with a canary pattern checked after the runs.  Input
 * buffers (with their slack) are read-only.  The start of a buffer is aligned to the largest
 * power of two (up to the page size) dividing its size.
 *
 * Results: each output buffer i (after the first run) in OUTDIR/out<i>.bin, and one JSON line on
 * stdout: {"status": "ok", "inner": n, "times": [seconds per call sequence, one per repeat]}
 * ("inner": 0 and "times": [] without --timing).
 *
 * Exit status: 0 ok; 2 harness error (usage, I/O: a bug of the caller, message "bitsearch-harness:
 * error: ..." on stderr); 3 out-of-bounds write detected by a canary; 4 calling-convention
 * violation (a callee-saved register, the stack pointer or FP control state not restored; checked
 * on x86-64 and AArch64 in the first run).  Faults re-raise the signal after printing
 * "bitsearch-harness: fault: ..." on stderr, so the process dies by that signal.
 */

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define EXIT_HARNESS_ERROR 2
#define EXIT_OUT_OF_BOUNDS 3
#define EXIT_ABI_VIOLATION 4

#define MAX_ARGS 6
#define MAX_LINE 4096
#define MAX_INNER (UINT64_C(1) << 40)

typedef uint64_t (*kernel_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);

typedef struct {
    unsigned char *map; /* whole mapping, RX part then a guard page */
    size_t map_len;
    size_t nbytes;
} code_t;

typedef struct {
    unsigned char *map; /* [guard][slack | data][guard] */
    size_t map_len;
    unsigned char *ptr; /* data start */
    size_t slack;       /* canary bytes in front of ptr */
    size_t nbytes;
    int output;
    char file[MAX_LINE]; /* input file, resolved path */
} buffer_t;

typedef struct {
    kernel_fn fn;
    uint64_t args[MAX_ARGS];
    /* unresolved form, as parsed */
    size_t code_index;
    int nargs;
    int is_buf[MAX_ARGS];
    uint64_t raw[MAX_ARGS];
} call_t;

static size_t page_size;
static code_t *codes;
static size_t ncodes;
static buffer_t *buffers;
static size_t nbuffers;
static call_t *calls;
static size_t ncalls;

/* Where we are, for fault messages (read from the signal handler). */
static const char *volatile phase = "setup";
static volatile long current_call = -1;

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */

static void die(const char *fmt, const char *a, const char *b) __attribute__((noreturn));
static void die_errno(const char *what, const char *name) __attribute__((noreturn));
static void usage(void) __attribute__((noreturn));

static void die(const char *fmt, const char *a, const char *b) {
    fputs("bitsearch-harness: error: ", stderr);
    fprintf(stderr, fmt, a ? a : "", b ? b : "");
    fputc('\n', stderr);
    exit(EXIT_HARNESS_ERROR);
}

static void die_errno(const char *what, const char *name) {
    fprintf(stderr, "bitsearch-harness: error: %s %s: %s\n", what, name ? name : "",
            strerror(errno));
    exit(EXIT_HARNESS_ERROR);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory%s%s", NULL, NULL);
    return q;
}

/* ------------------------------------------------------------------------------------------ */
/* Async-signal-safe message building                                                          */

typedef struct {
    char buf[1024];
    size_t len;
} msg_t;

static void msg_str(msg_t *m, const char *s) {
    while (*s && m->len + 1 < sizeof m->buf) m->buf[m->len++] = *s++;
}

static void msg_udec(msg_t *m, uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && m->len + 1 < sizeof m->buf) m->buf[m->len++] = tmp[--n];
}

static void msg_hex(msg_t *m, uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    msg_str(m, "0x");
    while (n && m->len + 1 < sizeof m->buf) m->buf[m->len++] = tmp[--n];
}

static void msg_write(msg_t *m) {
    size_t off = 0;
    if (m->len + 1 < sizeof m->buf) m->buf[m->len++] = '\n';
    while (off < m->len) {
        ssize_t w = write(2, m->buf + off, m->len - off);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            break;
        }
        off += (size_t)w;
    }
}

/* Describe an address relative to the buffers and code blobs. */
static void msg_where(msg_t *m, uintptr_t a) {
    size_t i;
    for (i = 0; i < nbuffers; i++) {
        const buffer_t *b = &buffers[i];
        uintptr_t lo = (uintptr_t)b->map, hi = lo + b->map_len;
        uintptr_t start = (uintptr_t)b->ptr, end = start + b->nbytes;
        if (a < lo || a >= hi) continue;
        if (a < start) {
            msg_str(m, a < lo + page_size ? "guard page before " : "canary slack before ");
            msg_str(m, b->output ? "output buffer " : "input buffer ");
            msg_udec(m, i);
            msg_str(m, " (");
            msg_udec(m, start - a);
            msg_str(m, " byte(s) before its start)");
        } else if (a < end) {
            msg_str(m, b->output ? "inside output buffer " : "inside input buffer ");
            msg_udec(m, i);
            msg_str(m, b->output ? " (offset " : " (read-only; offset ");
            msg_udec(m, a - start);
            msg_str(m, ")");
        } else {
            msg_str(m, "guard page after ");
            msg_str(m, b->output ? "output buffer " : "input buffer ");
            msg_udec(m, i);
            msg_str(m, " (");
            msg_udec(m, a - end + 1);
            msg_str(m, " byte(s) past its end)");
        }
        return;
    }
    for (i = 0; i < ncodes; i++) {
        const code_t *c = &codes[i];
        uintptr_t lo = (uintptr_t)c->map, hi = lo + c->map_len;
        if (a < lo || a >= hi) continue;
        msg_str(m, "code ");
        msg_udec(m, i);
        msg_str(m, " + ");
        msg_hex(m, a - lo);
        if (a - lo >= c->nbytes) msg_str(m, " (past the end of the code)");
        return;
    }
    if (a < 65536) msg_str(m, "near NULL");
    else msg_str(m, "outside the job's memory");
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGSYS: return "SIGSYS";
    default: return "signal";
    }
}

static uintptr_t context_pc(void *uc) {
#if defined(__x86_64__)
    return (uintptr_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)((ucontext_t *)uc)->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

static void fault_handler(int sig, siginfo_t *info, void *uc) {
    msg_t m;
    sigset_t set;
    uintptr_t pc = context_pc(uc);
    m.len = 0;
    msg_str(&m, "bitsearch-harness: fault: ");
    msg_str(&m, signal_name(sig));
    msg_str(&m, " (");
    msg_udec(&m, (uint64_t)sig);
    msg_str(&m, ") during the ");
    msg_str(&m, phase);
    msg_str(&m, " run");
    if (current_call >= 0) {
        msg_str(&m, ", call ");
        msg_udec(&m, (uint64_t)current_call);
    }
    if (sig == SIGSEGV || sig == SIGBUS) {
        msg_str(&m, "; address ");
        msg_hex(&m, (uintptr_t)info->si_addr);
        msg_str(&m, " = ");
        msg_where(&m, (uintptr_t)info->si_addr);
    }
    if (pc) {
        msg_str(&m, "; pc = ");
        msg_where(&m, pc);
    }
    msg_write(&m);
    /* Die by the same signal so that the parent sees it. */
    signal(sig, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
}

static void install_fault_handlers(void) {
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGSYS};
    stack_t ss;
    struct sigaction sa;
    size_t i, size = 64 * 1024;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED) die_errno("mmap", "signal stack");
    ss.ss_sp = stack;
    ss.ss_size = size;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) != 0) die_errno("sigaltstack", NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0) die_errno("sigaction", NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Calling-convention checks: a trampoline loads sentinel values into every callee-saved       */
/* register, calls the kernel, and records what the registers hold afterwards.                  */

#if defined(__x86_64__)
#define NSAVED 6
static const char *const saved_names[NSAVED] = {"rbx", "rbp", "r12", "r13", "r14", "r15"};
#elif defined(__aarch64__)
#define NSAVED 19
static const char *const saved_names[NSAVED] = {
    "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28",
    "x29", "d8",  "d9",  "d10", "d11", "d12", "d13", "d14", "d15"};
#else
#define NSAVED 1
static const char *const saved_names[NSAVED] = {"none"};
#endif

/* The field offsets are hard-coded in the assembly below; checked by ABI_OFFSET_OK. */
typedef struct {
    uint64_t fn;                   /* 0 */
    uint64_t args[MAX_ARGS];       /* 8 */
    uint64_t magic[NSAVED];        /* 56 */
    uint64_t after[NSAVED];        /* 56 + 8 N */
    uint64_t ret;                  /* 56 + 16 N */
    uint64_t sp_before, sp_after;  /* 64 + 16 N, 72 + 16 N */
    uint64_t flags;                /* 80 + 16 N: x86 RFLAGS */
    uint64_t ctl_before, ctl_after; /* 88 + 16 N, 96 + 16 N: x86 MXCSR | FCW << 32, arm FPCR */
} abi_frame_t;

#define ABI_OFFSET_OK(field, value) \
    typedef char abi_check_##field[(offsetof(abi_frame_t, field) == (value)) ? 1 : -1]
ABI_OFFSET_OK(args, 8);
ABI_OFFSET_OK(magic, 56);
ABI_OFFSET_OK(after, 56 + 8 * NSAVED);
ABI_OFFSET_OK(ret, 56 + 16 * NSAVED);
ABI_OFFSET_OK(sp_before, 64 + 16 * NSAVED);
ABI_OFFSET_OK(sp_after, 72 + 16 * NSAVED);
ABI_OFFSET_OK(flags, 80 + 16 * NSAVED);
ABI_OFFSET_OK(ctl_before, 88 + 16 * NSAVED);
ABI_OFFSET_OK(ctl_after, 96 + 16 * NSAVED);

__attribute__((visibility("hidden"), used)) abi_frame_t bs_abi_frame;
void bs_abi_call(void) __attribute__((visibility("hidden")));

#if defined(__x86_64__)
__asm__(
    "    .text\n"
    "    .p2align 4\n"
    "    .hidden bs_abi_call\n"
    "    .globl bs_abi_call\n"
    "    .type bs_abi_call, @function\n"
    "bs_abi_call:\n"
    "    pushq %rbx\n"
    "    pushq %rbp\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n" /* 16-byte aligned at the call below */
    "    leaq bs_abi_frame(%rip), %r11\n"
    "    stmxcsr 184(%r11)\n"
    "    fnstcw 188(%r11)\n"
    "    movq %rsp, 160(%r11)\n"
    "    movq 56(%r11), %rbx\n"
    "    movq 64(%r11), %rbp\n"
    "    movq 72(%r11), %r12\n"
    "    movq 80(%r11), %r13\n"
    "    movq 88(%r11), %r14\n"
    "    movq 96(%r11), %r15\n"
    "    movq 8(%r11), %rdi\n"
    "    movq 16(%r11), %rsi\n"
    "    movq 24(%r11), %rdx\n"
    "    movq 32(%r11), %rcx\n"
    "    movq 40(%r11), %r8\n"
    "    movq 48(%r11), %r9\n"
    "    movq 0(%r11), %rax\n"
    "    callq *%rax\n"
    "    leaq bs_abi_frame(%rip), %r11\n"
    "    movq %rax, 152(%r11)\n"
    "    movq %rbx, 104(%r11)\n"
    "    movq %rbp, 112(%r11)\n"
    "    movq %r12, 120(%r11)\n"
    "    movq %r13, 128(%r11)\n"
    "    movq %r14, 136(%r11)\n"
    "    movq %r15, 144(%r11)\n"
    "    movq %rsp, 168(%r11)\n"
    "    movq 160(%r11), %rsp\n"
    "    pushfq\n"
    "    popq %rax\n"
    "    movq %rax, 176(%r11)\n"
    "    stmxcsr 192(%r11)\n"
    "    fnstcw 196(%r11)\n"
    "    cld\n"
    "    ldmxcsr 184(%r11)\n"
    "    fldcw 188(%r11)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbp\n"
    "    popq %rbx\n"
    "    ret\n"
    "    .size bs_abi_call, .-bs_abi_call\n");
#elif defined(__aarch64__)
__asm__(
    "    .text\n"
    "    .p2align 4\n"
    "    .hidden bs_abi_call\n"
    "    .globl bs_abi_call\n"
    "    .type bs_abi_call, %function\n"
    "bs_abi_call:\n"
    "    stp x29, x30, [sp, #-160]!\n"
    "    mov x29, sp\n"
    "    stp x19, x20, [sp, #16]\n"
    "    stp x21, x22, [sp, #32]\n"
    "    stp x23, x24, [sp, #48]\n"
    "    stp x25, x26, [sp, #64]\n"
    "    stp x27, x28, [sp, #80]\n"
    "    stp d8, d9, [sp, #96]\n"
    "    stp d10, d11, [sp, #112]\n"
    "    stp d12, d13, [sp, #128]\n"
    "    stp d14, d15, [sp, #144]\n"
    "    adrp x16, bs_abi_frame\n"
    "    add x16, x16, :lo12:bs_abi_frame\n"
    "    mov x17, sp\n"
    "    str x17, [x16, #368]\n"
    "    mrs x17, fpcr\n"
    "    str x17, [x16, #392]\n"
    "    ldp x19, x20, [x16, #56]\n"
    "    ldp x21, x22, [x16, #72]\n"
    "    ldp x23, x24, [x16, #88]\n"
    "    ldp x25, x26, [x16, #104]\n"
    "    ldp x27, x28, [x16, #120]\n"
    "    ldr x29, [x16, #136]\n"
    "    ldp d8, d9, [x16, #144]\n"
    "    ldp d10, d11, [x16, #160]\n"
    "    ldp d12, d13, [x16, #176]\n"
    "    ldp d14, d15, [x16, #192]\n"
    "    ldp x0, x1, [x16, #8]\n"
    "    ldp x2, x3, [x16, #24]\n"
    "    ldp x4, x5, [x16, #40]\n"
    "    ldr x17, [x16, #0]\n"
    "    blr x17\n"
    "    adrp x16, bs_abi_frame\n"
    "    add x16, x16, :lo12:bs_abi_frame\n"
    "    str x0, [x16, #360]\n"
    "    stp x19, x20, [x16, #208]\n"
    "    stp x21, x22, [x16, #224]\n"
    "    stp x23, x24, [x16, #240]\n"
    "    stp x25, x26, [x16, #256]\n"
    "    stp x27, x28, [x16, #272]\n"
    "    str x29, [x16, #288]\n"
    "    stp d8, d9, [x16, #296]\n"
    "    stp d10, d11, [x16, #312]\n"
    "    stp d12, d13, [x16, #328]\n"
    "    stp d14, d15, [x16, #344]\n"
    "    mov x17, sp\n"
    "    str x17, [x16, #376]\n"
    "    mrs x17, fpcr\n"
    "    str x17, [x16, #400]\n"
    "    ldr x17, [x16, #368]\n"
    "    mov sp, x17\n"
    "    ldr x17, [x16, #392]\n"
    "    msr fpcr, x17\n"
    "    ldp x19, x20, [sp, #16]\n"
    "    ldp x21, x22, [sp, #32]\n"
    "    ldp x23, x24, [sp, #48]\n"
    "    ldp x25, x26, [sp, #64]\n"
    "    ldp x27, x28, [sp, #80]\n"
    "    ldp d8, d9, [sp, #96]\n"
    "    ldp d10, d11, [sp, #112]\n"
    "    ldp d12, d13, [sp, #128]\n"
    "    ldp d14, d15, [sp, #144]\n"
    "    ldp x29, x30, [sp], #160\n"
    "    ret\n"
    "    .size bs_abi_call, .-bs_abi_call\n");
#else
/* No check on other architectures: call directly and report the sentinels as preserved. */
void bs_abi_call(void) {
    abi_frame_t *f = &bs_abi_frame;
    kernel_fn fn = (kernel_fn)(uintptr_t)f->fn;
    f->ret = fn(f->args[0], f->args[1], f->args[2], f->args[3], f->args[4], f->args[5]);
    memcpy(f->after, f->magic, sizeof f->magic);
}
#endif

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Run call k through the checking trampoline; exit with EXIT_ABI_VIOLATION if it misbehaves. */
static void checked_call(size_t k, uint64_t *seed) {
    abi_frame_t *f = &bs_abi_frame;
    const call_t *c = &calls[k];
    int i;
    memset(f, 0, sizeof *f);
    f->fn = (uint64_t)(uintptr_t)c->fn;
    for (i = 0; i < MAX_ARGS; i++) f->args[i] = c->args[i];
    for (i = 0; i < NSAVED; i++) f->magic[i] = splitmix64(seed);
    bs_abi_call();
    for (i = 0; i < NSAVED; i++) {
        if (f->after[i] != f->magic[i]) {
            fprintf(stderr,
                    "bitsearch-harness: abi violation: call %zu (code %zu) did not preserve "
                    "callee-saved register %s (0x%016llx -> 0x%016llx)\n",
                    k, c->code_index, saved_names[i], (unsigned long long)f->magic[i],
                    (unsigned long long)f->after[i]);
            exit(EXIT_ABI_VIOLATION);
        }
    }
#if defined(__x86_64__) || defined(__aarch64__)
    if (f->sp_after != f->sp_before) {
        fprintf(stderr,
                "bitsearch-harness: abi violation: call %zu (code %zu) returned with the stack "
                "pointer moved by %lld bytes\n",
                k, c->code_index, (long long)(f->sp_after - f->sp_before));
        exit(EXIT_ABI_VIOLATION);
    }
#endif
#if defined(__x86_64__)
    if (f->flags & 0x400) {
        fprintf(stderr,
                "bitsearch-harness: abi violation: call %zu (code %zu) returned with the "
                "direction flag set\n",
                k, c->code_index);
        exit(EXIT_ABI_VIOLATION);
    }
    /* MXCSR control bits (not the sticky status bits 0-5) and the x87 control word. */
    if ((f->ctl_before ^ f->ctl_after) & UINT64_C(0x00000F3F0000FFC0)) {
        fprintf(stderr,
                "bitsearch-harness: abi violation: call %zu (code %zu) changed the FP control "
                "state (MXCSR 0x%04x -> 0x%04x, x87 CW 0x%04x -> 0x%04x)\n",
                k, c->code_index, (unsigned)(f->ctl_before & 0xFFFF),
                (unsigned)(f->ctl_after & 0xFFFF), (unsigned)((f->ctl_before >> 32) & 0xFFFF),
                (unsigned)((f->ctl_after >> 32) & 0xFFFF));
        exit(EXIT_ABI_VIOLATION);
    }
#elif defined(__aarch64__)
    if (f->ctl_before != f->ctl_after) {
        fprintf(stderr,
                "bitsearch-harness: abi violation: call %zu (code %zu) changed FPCR "
                "(0x%llx -> 0x%llx)\n",
                k, c->code_index, (unsigned long long)f->ctl_before,
                (unsigned long long)f->ctl_after);
        exit(EXIT_ABI_VIOLATION);
    }
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Job file                                                                                    */

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    unsigned long long v;
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || *end) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_size(const char *s, size_t *out) {
    uint64_t v;
    if (!parse_u64(s, &v) || v > (uint64_t)(SIZE_MAX / 4)) return 0;
    *out = (size_t)v;
    return 1;
}

static void join_path(char *dst, const char *dir, const char *name) {
    if (name[0] == '/' || !dir[0]) {
        if (strlen(name) >= MAX_LINE) die("path too long: %s%s", name, NULL);
        strcpy(dst, name);
    } else {
        if (strlen(dir) + strlen(name) + 2 > MAX_LINE) die("path too long: %s%s", name, NULL);
        sprintf(dst, "%s/%s", dir, name);
    }
}

/* Read exactly n bytes of a file into dst (which must hold n bytes). */
static void read_file_exact(const char *path, unsigned char *dst, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) die_errno("cannot open", path);
    if (n && fread(dst, 1, n, f) != n) die("file %s is shorter than declared%s", path, NULL);
    if (fgetc(f) != EOF) die("file %s is longer than declared%s", path, NULL);
    fclose(f);
}

#define MAX_TOKENS (MAX_ARGS + 4)

static void parse_job(const char *job_path) {
    char line[MAX_LINE], dir[MAX_LINE], path[MAX_LINE];
    char *tok[MAX_TOKENS + 1];
    const char *slash;
    int version = 0;
    long lineno = 0;
    FILE *f = fopen(job_path, "r");
    if (!f) die_errno("cannot open job file", job_path);

    slash = strrchr(job_path, '/');
    if (slash) {
        size_t n = (size_t)(slash - job_path);
        if (n >= sizeof dir) die("path too long: %s%s", job_path, NULL);
        memcpy(dir, job_path, n);
        dir[n] = 0;
        if (n == 0) strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }

    while (fgets(line, sizeof line, f)) {
        char *hash, *save = NULL, *t;
        int nt = 0;
        char where[64];
        lineno++;
        snprintf(where, sizeof where, " (job file line %ld)", lineno);
        if (!strchr(line, '\n') && !feof(f)) die("line too long%s%s", where, NULL);
        hash = strchr(line, '#');
        if (hash) *hash = 0;
        for (t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
            if (nt == MAX_TOKENS) die("too many fields%s%s", where, NULL);
            tok[nt++] = t;
        }
        if (nt == 0) continue;

        if (strcmp(tok[0], "version") == 0) {
            if (nt != 2 || strcmp(tok[1], "1") != 0)
                die("unsupported job file version%s%s", where, NULL);
            version = 1;
        } else if (!version) {
            die("job file must start with 'version 1'%s%s", where, NULL);
        } else if (strcmp(tok[0], "code") == 0) {
            uint64_t idx;
            size_t n, len;
            code_t *c;
            if (nt != 4 || !parse_u64(tok[1], &idx) || !parse_size(tok[3], &n))
                die("malformed code record%s%s", where, NULL);
            if (idx != ncodes) die("code indices must be 0, 1, 2, ...%s%s", where, NULL);
            codes = xrealloc(codes, (ncodes + 1) * sizeof *codes);
            c = &codes[ncodes++];
            len = round_up(n ? n : 1, page_size);
            c->nbytes = n;
            c->map_len = len + page_size;
            c->map = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
            if (c->map == MAP_FAILED) die_errno("mmap", "code");
#if defined(__x86_64__)
            memset(c->map, 0xCC, len); /* int3: running off the end traps */
#else
            memset(c->map, 0, len); /* AArch64: 0x00000000 is UDF #0 */
#endif
            join_path(path, dir, tok[2]);
            read_file_exact(path, c->map, n);
            if (mprotect(c->map, len, PROT_READ | PROT_EXEC) != 0) die_errno("mprotect", "code");
            if (mprotect(c->map + len, page_size, PROT_NONE) != 0)
                die_errno("mprotect", "code guard");
            __builtin___clear_cache((char *)c->map, (char *)c->map + len);
        } else if (strcmp(tok[0], "buf") == 0) {
            uint64_t idx;
            buffer_t *b;
            int output;
            size_t n;
            if (nt < 3 || !parse_u64(tok[1], &idx)) die("malformed buf record%s%s", where, NULL);
            if (idx != nbuffers) die("buffer indices must be 0, 1, 2, ...%s%s", where, NULL);
            if (strcmp(tok[2], "in") == 0 && nt == 5 && parse_size(tok[4], &n)) {
                output = 0;
            } else if (strcmp(tok[2], "out") == 0 && nt == 4 && parse_size(tok[3], &n)) {
                output = 1;
            } else {
                die("malformed buf record%s%s", where, NULL);
            }
            buffers = xrealloc(buffers, (nbuffers + 1) * sizeof *buffers);
            b = &buffers[nbuffers++];
            memset(b, 0, sizeof *b);
            b->nbytes = n;
            b->output = output;
            if (!output) join_path(b->file, dir, tok[3]);
        } else if (strcmp(tok[0], "call") == 0) {
            call_t *c;
            uint64_t idx;
            int i;
            if (nt < 2 || nt > 2 + MAX_ARGS || !parse_u64(tok[1], &idx))
                die("malformed call record%s%s", where, NULL);
            calls = xrealloc(calls, (ncalls + 1) * sizeof *calls);
            c = &calls[ncalls++];
            memset(c, 0, sizeof *c);
            c->code_index = (size_t)idx;
            c->nargs = nt - 2;
            for (i = 0; i < c->nargs; i++) {
                const char *a = tok[2 + i];
                if (strncmp(a, "buf:", 4) == 0 && parse_u64(a + 4, &c->raw[i])) {
                    c->is_buf[i] = 1;
                } else if (strncmp(a, "int:", 4) == 0 && parse_u64(a + 4, &c->raw[i])) {
                    c->is_buf[i] = 0;
                } else {
                    die("malformed call argument '%s'%s", a, where);
                }
            }
        } else {
            die("unknown record '%s'%s", tok[0], where);
        }
    }
    if (ferror(f)) die_errno("cannot read job file", job_path);
    fclose(f);
    if (!version) die("empty job file%s%s", NULL, NULL);
}

/* Canary byte for offset i of the slack in front of buffer b. */
static unsigned char canary(size_t b, size_t i) {
    return (unsigned char)(0xA5 ^ (i * 0x3B) ^ (b * 0x71) ^ (i >> 8));
}

static void setup_buffers(void) {
    size_t i;
    for (i = 0; i < nbuffers; i++) {
        buffer_t *b = &buffers[i];
        size_t data_len = round_up(b->nbytes ? b->nbytes : 1, page_size), j;
        unsigned char *data;
        b->map_len = data_len + 2 * page_size;
        b->map = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                      0);
        if (b->map == MAP_FAILED) die_errno("mmap", "buffer");
        data = b->map + page_size;
        if (mprotect(b->map, page_size, PROT_NONE) != 0 ||
            mprotect(data + data_len, page_size, PROT_NONE) != 0)
            die_errno("mprotect", "buffer guard");
        b->ptr = data + data_len - b->nbytes;
        b->slack = data_len - b->nbytes;
        for (j = 0; j < b->slack; j++) data[j] = canary(i, j);
        if (!b->output) {
            read_file_exact(b->file, b->ptr, b->nbytes);
            if (mprotect(data, data_len, PROT_READ) != 0) die_errno("mprotect", "input buffer");
        }
    }
}

static void resolve_calls(void) {
    size_t k;
    int i;
    for (k = 0; k < ncalls; k++) {
        call_t *c = &calls[k];
        if (c->code_index >= ncodes) die("call refers to a missing code blob%s%s", NULL, NULL);
        c->fn = (kernel_fn)(uintptr_t)codes[c->code_index].map;
        for (i = 0; i < MAX_ARGS; i++) c->args[i] = 0;
        for (i = 0; i < c->nargs; i++) {
            if (c->is_buf[i]) {
                if (c->raw[i] >= nbuffers) die("call refers to a missing buffer%s%s", NULL, NULL);
                c->args[i] = (uint64_t)(uintptr_t)buffers[c->raw[i]].ptr;
            } else {
                c->args[i] = c->raw[i];
            }
        }
    }
}

static void check_canaries(void) {
    size_t i, j;
    for (i = 0; i < nbuffers; i++) {
        const buffer_t *b = &buffers[i];
        const unsigned char *data = b->map + page_size;
        for (j = 0; j < b->slack; j++) {
            if (data[j] != canary(i, j)) {
                fprintf(stderr,
                        "bitsearch-harness: out-of-bounds write before buffer %zu (%zu byte(s) "
                        "before its start) during the %s run\n",
                        i, b->slack - j, phase);
                exit(EXIT_OUT_OF_BOUNDS);
            }
        }
    }
}

static void write_outputs(const char *outdir) {
    char path[MAX_LINE + 32];
    size_t i;
    for (i = 0; i < nbuffers; i++) {
        FILE *f;
        if (!buffers[i].output) continue;
        if (strlen(outdir) + 32 > sizeof path) die("path too long: %s%s", outdir, NULL);
        sprintf(path, "%s/out%zu.bin", outdir, i);
        f = fopen(path, "wb");
        if (!f) die_errno("cannot create", path);
        if (buffers[i].nbytes && fwrite(buffers[i].ptr, 1, buffers[i].nbytes, f) != buffers[i].nbytes)
            die_errno("cannot write", path);
        if (fclose(f) != 0) die_errno("cannot write", path);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Running and timing                                                                           */

static void run_sequence(void) {
    size_t k;
    for (k = 0; k < ncalls; k++) {
        const call_t *c = &calls[k];
        c->fn(c->args[0], c->args[1], c->args[2], c->args[3], c->args[4], c->args[5]);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double time_inner(uint64_t inner) {
    uint64_t r;
    double t0 = now();
    for (r = 0; r < inner; r++) run_sequence();
    return now() - t0;
}

static void usage(void) {
    die("usage: harness JOBFILE OUTDIR [--timing] [--min-time S] [--repeats N] [--warmup W] "
        "[--core C]%s%s",
        NULL, NULL);
}

int main(int argc, char **argv) {
    const char *job_path = NULL, *outdir = NULL;
    int timing = 0, core = -1, i;
    double min_time = 0.01;
    long repeats = 10, warmup = 1;
    uint64_t seed = UINT64_C(0x2545F4914F6CDD1D), inner = 0;
    double *times = NULL;
    struct rlimit no_core = {0, 0};
    long ps = sysconf(_SC_PAGESIZE);
    size_t k;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (strcmp(a, "--timing") == 0) {
            timing = 1;
        } else if (strcmp(a, "--min-time") == 0 && i + 1 < argc) {
            errno = 0;
            min_time = strtod(argv[++i], &end);
            if (errno || *end || !(min_time >= 0 && min_time <= 3600)) usage();
        } else if ((strcmp(a, "--repeats") == 0 || strcmp(a, "--warmup") == 0 ||
                    strcmp(a, "--core") == 0) &&
                   i + 1 < argc) {
            long v;
            errno = 0;
            v = strtol(argv[++i], &end, 10);
            if (errno || *end || v < 0 || v > 1000000) usage();
            if (a[2] == 'r') repeats = v;
            else if (a[2] == 'w') warmup = v;
            else core = (int)v;
        } else if (a[0] == '-' && a[1] == '-') {
            usage();
        } else if (!job_path) {
            job_path = a;
        } else if (!outdir) {
            outdir = a;
        } else {
            usage();
        }
    }
    if (!job_path || !outdir || repeats < 1) usage();
    if (ps <= 0) die_errno("sysconf", "_SC_PAGESIZE");
    page_size = (size_t)ps;

    setrlimit(RLIMIT_CORE, &no_core); /* a crashing candidate must not leave core files */

    if (core >= 0) {
        cpu_set_t set;
        if (core >= CPU_SETSIZE) die("core number out of range%s%s", NULL, NULL);
        CPU_ZERO(&set);
        CPU_SET(core, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) die_errno("sched_setaffinity", "");
    }

    parse_job(job_path);
    setup_buffers();
    resolve_calls();
    install_fault_handlers();

    /* Verification run, with the calling-convention checks. */
    phase = "verify";
    for (k = 0; k < ncalls; k++) {
        current_call = (long)k;
        checked_call(k, &seed);
    }
    current_call = -1;
    check_canaries();
    write_outputs(outdir);

    if (timing) {
        long r;
        phase = "warmup";
        for (r = 0; r < warmup; r++) run_sequence();
        phase = "calibration";
        inner = 1;
        while (time_inner(inner) < min_time && inner < MAX_INNER) inner *= 2;
        phase = "timing";
        times = xrealloc(NULL, (size_t)repeats * sizeof *times);
        for (r = 0; r < repeats; r++) times[r] = time_inner(inner) / (double)inner;
        check_canaries();
    }

    printf("{\"status\": \"ok\", \"inner\": %llu, \"times\": [", (unsigned long long)inner);
    if (timing) {
        long r;
        for (r = 0; r < repeats; r++) printf("%s%.9e", r ? ", " : "", times[r]);
    }
    printf("]}\n");
    if (fflush(stdout) != 0) die_errno("cannot write", "stdout");
    return 0;
}
