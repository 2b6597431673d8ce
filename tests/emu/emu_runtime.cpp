/*
 * The emulated device's thread machinery (emu.h): each CUDA thread of a block is a
 * fiber with its own stack, run on the calling OS thread. A fiber runs until it
 * waits at a barrier (__syncthreads, __syncwarp, a shuffle, ldmatrix, mma) or
 * returns; the scheduler then resumes the next fiber that can go on, round robin.
 * The last thread to arrive at a barrier opens it and goes on. When no fiber can
 * go on and some have not finished, the block is stuck: the kernel aborts with the
 * counts of threads at each barrier and of those that exited. The last thread to
 * reach a warp barrier also does the work of warp-wide operations (shuffles,
 * ldmatrix, mma) for every lane, and checks that all reached the same one.
 *
 * Context switches are a few instructions of x86-64 assembly (the callee-saved
 * registers; the kernels leave the MXCSR and x87 control words alone, so they are
 * not switched); elsewhere ucontext. A fiber that waits or finishes switches
 * straight to the next one that can go on; the scheduler gets control back only
 * when the block is done or stuck. Stacks are
 * mmap'ed once per OS thread, 64 KiB each below a guard page, and reused.
 */
#include "emu.h"

#include <sys/mman.h>
#include <unistd.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

constinit thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
constinit thread_local emu_block *emu_blk;
constinit thread_local unsigned emu_tid;
constinit thread_local emu_thread_state *emu_self;

namespace {

constexpr size_t STACK_BYTES = 64 << 10;
enum { ORDER_FORWARD, ORDER_REVERSE, ORDER_RANDOM };

struct fiber {
#if defined(__x86_64__)
    void *sp;
#else
    ucontext_t uc;
#endif
    bool done;
    emu_barrier *wait;   // the barrier it waits at, or null
    unsigned wait_gen;   // that barrier's generation when it arrived
    dim3 idx;
    emu_thread_state st;
};

struct scheduler {   // one per OS thread
    char *stacks = nullptr;
    size_t nstacks = 0, page = 0;
    std::vector<fiber> fibers;
    unsigned cur = 0;
#if defined(__x86_64__)
    void *main_sp = nullptr;
#else
    ucontext_t main_uc;
#endif
    void (*fn)(void *) = nullptr;
    void *ctx = nullptr;
    const char *name = nullptr;
    unsigned left = 0;   // fibers not finished
    int order = 0;       // ORDER_*
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    emu_block blk;
};
thread_local scheduler *sched;

/* EMU_SCHEDULE=reverse: threads and blocks in the opposite order; random: the next
 * thread at random at every switch, blocks in a random order. The default order is
 * round robin from thread 0 and block (0, 0, 0). Results must not depend on it. */
uint64_t rng_next(scheduler *s) {
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

}  // namespace

#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void **save_sp, void *to_sp);
extern "C" void emu_fiber_entry(void);
asm(R"(
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch

    .globl emu_fiber_entry
    .type emu_fiber_entry, @function
emu_fiber_entry:
    call emu_fiber_main
    ud2
    .size emu_fiber_entry, .-emu_fiber_entry
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

static void enter(scheduler *s, unsigned t) {
    fiber &f = s->fibers[t];
    f.wait = nullptr;
    s->cur = t;
    threadIdx = f.idx;
    emu_tid = t;
    emu_self = &f.st;
}

/* From the current fiber, which waits or has finished, straight to the next one
 * that can go on (round robin), or back to the scheduler when none can. */
static void switch_away(scheduler *s) {
    unsigned T = (unsigned)s->fibers.size(), from = s->cur;
    fiber &f = s->fibers[from];
    unsigned start = s->order == ORDER_RANDOM ? (unsigned)(rng_next(s) % T) : 0;
    for (unsigned k = 1; k <= T; k++) {
        unsigned t = s->order == ORDER_REVERSE ? (from + T - k) % T : (from + start + k) % T;
        fiber &g = s->fibers[t];
        if (g.done || (g.wait && g.wait->gen == g.wait_gen)) continue;
        enter(s, t);
#if defined(__x86_64__)
        emu_ctx_switch(&f.sp, g.sp);
#else
        swapcontext(&f.uc, &g.uc);
#endif
        return;
    }
#if defined(__x86_64__)
    emu_ctx_switch(&f.sp, s->main_sp);
#else
    swapcontext(&f.uc, &s->main_uc);
#endif
}

extern "C" void emu_fiber_main(void) {
    scheduler *s = sched;
    s->fn(s->ctx);
    s->fibers[s->cur].done = true;
    s->left--;
    switch_away(s);
    abort();   // a finished fiber is never resumed
}

bool emu_barrier_arrive(emu_barrier &b) {
    if (++b.arrived == b.expected) return true;   // the last one goes on, and releases the others
    scheduler *s = sched;
    fiber &f = s->fibers[s->cur];
    f.wait = &b;
    f.wait_gen = b.gen;
    switch_away(s);
    return false;
}

void emu_sites_differ(const char *what, const emu_site *site, int n) {
    fprintf(stderr, "emulated device: kernel %s, block (%u, %u, %u): the threads of one %s reached different "
            "barriers (divergent code):\n", sched ? sched->name : "?", blockIdx.x, blockIdx.y, blockIdx.z,
            strcmp(what, "__syncthreads") ? "warp" : "block");
    for (int i = 0, shown = 0; i < n && shown < 8; i++)
        if (i == 0 || site[i] != site[i - 1]) {
            fprintf(stderr, "  thread %d on: %s %s:%u%s\n", i, what, site[i].file, site[i].line, ++shown == 8 ? " ..." : "");
        }
    abort();
}

static void ensure_stacks(scheduler *s, size_t n) {
    if (n <= s->nstacks) return;
    if (s->stacks) munmap(s->stacks, s->nstacks * (STACK_BYTES + s->page));
    s->page = (size_t)sysconf(_SC_PAGESIZE);
    size_t each = STACK_BYTES + s->page, total = n * each;
    void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    EMU_CHECK(p != MAP_FAILED, "cannot map %zu bytes of fiber stacks", total);
    s->stacks = (char *)p;
    for (size_t i = 0; i < n; i++) mprotect(s->stacks + i * each, s->page, PROT_NONE);   // guard below each stack
    s->nstacks = n;
}

/* The fiber's first switch lands in emu_fiber_entry with a fresh stack. */
static void fiber_init(scheduler *s, fiber &f, size_t i) {
    char *base = s->stacks + i * (STACK_BYTES + s->page) + s->page, *top = base + STACK_BYTES;
#if defined(__x86_64__)
    uint64_t *sp = (uint64_t *)top;   // 16-byte aligned
    sp[-1] = 0;
    sp[-2] = 0;
    sp[-3] = (uint64_t)(uintptr_t)emu_fiber_entry;   // popped by ret: entry with rsp % 16 == 0, as after a call's push
    for (int k = 4; k <= 9; k++) sp[-k] = 0;          // rbp, rbx, r12 .. r15
    f.sp = &sp[-9];
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = base;
    f.uc.uc_stack.ss_size = STACK_BYTES;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, (void (*)())emu_fiber_main, 0);
#endif
}

static void run_block(scheduler *s, const char *name, dim3 bidx, dim3 block, size_t smem) {
    unsigned T = block.x * block.y * block.z, nwarps = (T + 31) / 32;
    emu_block &blk = s->blk;
    blk.bar = emu_barrier{(int)T, 0, 0};
    blk.site.resize(T);
    blk.warps.resize(nwarps);
    for (unsigned w = 0; w < nwarps; w++) blk.warps[w].bar = emu_barrier{(int)std::min(32u, T - 32 * w), 0, 0};
    blk.smem = (unsigned char *)malloc(smem ? smem : 1);   // exact size, for AddressSanitizer builds
    EMU_CHECK(blk.smem, "cannot allocate %zu bytes of shared memory", smem);
    memset(blk.smem, 0xff, smem);   // bf16 0xffff, fp32 0xffffffff: NaN
    blk.smem_size = smem;
    blk.shared_base = 16;
    blk.ldsm_conflicts = blk.ldsm_phases = 0;
    emu_blk = &blk;
    blockIdx = bidx;
    s->fibers.resize(T);
    for (unsigned t = 0; t < T; t++) {
        fiber &f = s->fibers[t];
        f.done = false;
        f.wait = nullptr;
        f.idx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
        f.st.groups.clear();
        f.st.pending.clear();
        fiber_init(s, f, t);
    }
    s->left = T;
    unsigned first = s->order == ORDER_REVERSE ? T - 1 : s->order == ORDER_RANDOM ? (unsigned)(rng_next(s) % T) : 0;
    enter(s, first);   // the fibers pass control among themselves; back here when none can go on
#if defined(__x86_64__)
    emu_ctx_switch(&s->main_sp, s->fibers[first].sp);
#else
    swapcontext(&s->main_uc, &s->fibers[first].uc);
#endif
    if (s->left) {   // stuck: report where everyone is
        unsigned at_block = 0, at_warp = 0, exited = T - s->left;
        for (auto &f : s->fibers)
            if (!f.done) (f.wait == &blk.bar ? at_block : at_warp)++;
        fprintf(stderr,
                "emulated device: kernel %s, block (%u, %u, %u) of (%u, %u, %u), %u threads: deadlock at a barrier: "
                "%u threads wait at __syncthreads, %u at warp barriers, %u have exited (a barrier inside "
                "divergent code, or threads returning before a barrier the others reach)\n",
                name, bidx.x, bidx.y, bidx.z, gridDim.x, gridDim.y, gridDim.z, T, at_block, at_warp, exited);
        abort();
    }
    free(blk.smem);
    blk.smem = nullptr;
    emu_blk = nullptr;
}

void emu_run_grid(const char *name, dim3 grid, dim3 block, size_t smem, void (*fn)(void *), void *ctx, long *conflicts,
                  long *phases) {
    if (!sched) {
        sched = new scheduler();
        const char *o = getenv("EMU_SCHEDULE");
        sched->order = !o || !*o || !strcmp(o, "forward") ? ORDER_FORWARD : !strcmp(o, "reverse") ? ORDER_REVERSE
                       : !strcmp(o, "random") ? ORDER_RANDOM : -1;
        EMU_CHECK(sched->order >= 0, "EMU_SCHEDULE=%s: forward, reverse or random", o);
    }
    scheduler *s = sched;
    unsigned T = block.x * block.y * block.z;
    EMU_CHECK(T >= 1 && T <= 1024, "kernel %s: %u threads per block", name, T);
    ensure_stacks(s, T);
    gridDim = grid;
    blockDim = block;
    s->fn = fn;
    s->ctx = ctx;
    s->name = name;
    size_t nblocks = (size_t)grid.x * grid.y * grid.z, shift = s->order == ORDER_RANDOM ? rng_next(s) % nblocks : 0;
    for (size_t i = 0; i < nblocks; i++) {
        size_t j = s->order == ORDER_REVERSE ? nblocks - 1 - i : i;
        if (s->order == ORDER_RANDOM) j = (i * 2654435761u + shift) % nblocks;   // a permutation: the multiplier is a prime
        run_block(s, name, dim3((unsigned)(j % grid.x), (unsigned)(j / grid.x % grid.y), (unsigned)(j / grid.x / grid.y)),
                  block, smem);
        if (conflicts) *conflicts += s->blk.ldsm_conflicts;
        if (phases) *phases += s->blk.ldsm_phases;
    }
}
