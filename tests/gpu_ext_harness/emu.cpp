// Fiber runtime of the CPU execution harness (see cuda_runtime.h in shim/).
//
// A launch runs the blocks of its grid one after the other.  Every thread of a block is a fiber
// with its own stack (guard page below it) that runs until it blocks (at __syncthreads or a warp
// collective) or returns.  Schedule (VBEMU_SCHEDULE): "depth" (default) always resumes the
// lowest-numbered runnable thread, so warp 0 runs as far ahead of the others as the barriers
// allow (a missing barrier before shared memory is reused shows); "round" resumes every
// runnable thread in turn (warps advance in step; thread 0 runs ahead of its block).
//  * __syncthreads: a counting barrier over the block's live threads; all waiting threads must
//    have reached the same call site.
//  * warp collectives: a lane waits until every lane named in the mask has reached the same
//    collective (kind, call site, mask); it fails loudly when a named lane does not exist, has
//    exited, waits at __syncthreads or at another collective.
//  * block-shared arrays are poisoned (0xff bytes) before every block.
// Errors print "vbemu: FAIL ..." with the kernel, block and thread, and exit with status 86.
// The context switch is a few lines of x86-64 assembly (callee-saved registers, x87/SSE control
// words); under AddressSanitizer it tells ASan about every stack switch.
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "emu_control.h"

#if !defined(__x86_64__)
#error "the harness's fiber switch is written for x86-64"
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define VBEMU_ASAN 1
#define VBEMU_NO_ASAN __attribute__((no_sanitize_address))
#else
#define VBEMU_ASAN 0
#define VBEMU_NO_ASAN
#endif

extern "C" void vbemu_swap(void** save_sp, void* new_sp);
extern "C" void vbemu_trampoline();
// vbemu_swap(&from_sp, to_sp): push the callee-saved registers and the FPU/SSE control words on
// the current stack, store its pointer, load the other one and pop the same.  A fresh fiber's
// stack holds such a frame returning to vbemu_trampoline, which calls r13(r12).
asm(R"(
  .text
  .p2align 4
  .globl vbemu_swap
  .type vbemu_swap, @function
vbemu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  fnstcw (%rsp)
  stmxcsr 8(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size vbemu_swap, .-vbemu_swap
  .p2align 4
  .globl vbemu_trampoline
  .type vbemu_trampoline, @function
vbemu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size vbemu_trampoline, .-vbemu_trampoline
)");

// bounds of the section that holds every __shared__ array (weak: absent without any)
extern "C" char __start_vbemu_shared[] __attribute__((weak));
extern "C" char __stop_vbemu_shared[] __attribute__((weak));

namespace vbemu {

const ThreadCtx* g_cur = nullptr;
dim3 g_block_idx, g_block_dim, g_grid_dim;

namespace {

enum State : unsigned char { kRunnable, kAtBarrier, kAtColl, kExited };

const char* coll_name(Coll k) {
  switch (k) {
    case kShflDown: return "__shfl_down_sync";
    case kShflUp: return "__shfl_up_sync";
    case kShflXor: return "__shfl_xor_sync";
    case kShflIdx: return "__shfl_sync";
    case kAny: return "__any_sync";
    case kAll: return "__all_sync";
    case kBallot: return "__ballot_sync";
    case kSyncWarp: return "__syncwarp";
  }
  return "?";
}

struct Fiber : ThreadCtx {
  void* sp = nullptr;
  char* stack = nullptr;  // usable stack [stack, stack + stack_size), guard page below
  size_t stack_size = 0;
  int tid = 0;            // linear thread index in the block
  State state = kRunnable;
  // the collective this fiber waits at
  Coll kind = kSyncWarp;
  int arg = 0, width = 32;
  uint64_t bits = 0, result = 0;
  void* fake_stack = nullptr;  // ASan
};

// a collective that some lanes of a warp wait at (members: the lanes that have arrived)
struct Group {
  unsigned mask, members;
  Coll kind;
  const char* file;
  int line;
};

struct Runtime {
  std::vector<Fiber*> pool;
  void* main_sp = nullptr;
  void* main_fake_stack = nullptr;
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  Fiber* cur = nullptr;
  int n = 0, live = 0;
  int bar_count = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  std::vector<std::vector<Group>> groups;  // per warp
  void (*entry)(void*) = nullptr;
  void* entry_ctx = nullptr;
  const char* kernel = nullptr;
  cudaError_t last_error = cudaSuccess;
  unsigned filter_grid = 0;
  uint64_t filter_first = 0, filter_last = 0;
  Stats stats;
  size_t stack_bytes = 0;
  bool round_robin = false;
  std::vector<uint64_t> runnable;  // bit t: pool[t] is kRunnable
};

Runtime rt;

size_t stack_bytes() {
  if (!rt.stack_bytes) {
    size_t kb = VBEMU_ASAN ? 256 : 64;
    if (const char* e = std::getenv("VBEMU_STACK_KB")) kb = std::strtoul(e, nullptr, 10);
    rt.stack_bytes = (kb < 16 ? 16 : kb) * 1024;
  }
  return rt.stack_bytes;
}

Fiber* new_fiber() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t size = (stack_bytes() + page - 1) / page * page;
  void* mem = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (mem == MAP_FAILED) fail("cannot map a fiber stack");
  if (mprotect(mem, page, PROT_NONE) != 0) fail("cannot protect a fiber stack's guard page");
  Fiber* f = new Fiber();
  f->stack = static_cast<char*>(mem) + page;
  f->stack_size = size;
  return f;
}

void describe(char* buf, size_t len) {
  if (!rt.kernel) {
    std::snprintf(buf, len, "outside a kernel");
    return;
  }
  if (!rt.cur) {
    std::snprintf(buf, len, "kernel %s, block (%u,%u,%u)", rt.kernel, g_block_idx.x,
                  g_block_idx.y, g_block_idx.z);
    return;
  }
  std::snprintf(buf, len, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u) = warp %d lane %d",
                rt.kernel, g_block_idx.x, g_block_idx.y, g_block_idx.z, rt.cur->idx.x,
                rt.cur->idx.y, rt.cur->idx.z, rt.cur->tid >> 5, rt.cur->tid & 31);
}

// ---------------------------------------------------------------------------- switching

inline void asan_start(void** save, const void* bottom, size_t size) {
#if VBEMU_ASAN
  __sanitizer_start_switch_fiber(save, bottom, size);
#else
  (void)save, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void* save, const void** bottom, size_t* size) {
#if VBEMU_ASAN
  __sanitizer_finish_switch_fiber(save, bottom, size);
#else
  (void)save, (void)bottom, (void)size;
#endif
}

void resume(Fiber* f) {  // scheduler -> fiber
  rt.cur = f;
  g_cur = f;
  asan_start(&rt.main_fake_stack, f->stack, f->stack_size);
  vbemu_swap(&rt.main_sp, f->sp);
  asan_finish(rt.main_fake_stack, nullptr, nullptr);
  rt.cur = nullptr;
  g_cur = nullptr;
  ++rt.stats.switches;
}

void yield() {  // fiber -> scheduler; returns when resumed
  Fiber* f = rt.cur;
  asan_start(&f->fake_stack, rt.main_stack_bottom, rt.main_stack_size);
  vbemu_swap(&f->sp, rt.main_sp);
  asan_finish(f->fake_stack, nullptr, nullptr);
}

void set_state(Fiber* f, State s) {
  f->state = s;
  const uint64_t bit = 1ull << (f->tid & 63);
  if (s == kRunnable) {
    rt.runnable[f->tid >> 6] |= bit;
  } else {
    rt.runnable[f->tid >> 6] &= ~bit;
  }
}

void check_not_named(Fiber* me, const char* what);
void release_barrier();

// The fiber's first frame.  Not instrumented by ASan: it is abandoned when the thread exits,
// so it must leave no poisoned stack behind for the next block.
VBEMU_NO_ASAN void fiber_main(void* p) {
  asan_finish(nullptr, &rt.main_stack_bottom, &rt.main_stack_size);
  (void)p;
  rt.entry(rt.entry_ctx);
  Fiber* me = rt.cur;
  set_state(me, kExited);
  --rt.live;
  check_not_named(me, "exited");
  if (rt.bar_count > 0 && rt.bar_count == rt.live) release_barrier();
  asan_start(nullptr, rt.main_stack_bottom, rt.main_stack_size);
  vbemu_swap(&me->sp, rt.main_sp);
  __builtin_unreachable();
}

void init_fiber(Fiber* f) {
  unsigned short fcw;
  unsigned int mxcsr;
  asm volatile("fnstcw %0" : "=m"(fcw));
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  auto* top = reinterpret_cast<uintptr_t*>(f->stack + f->stack_size);  // 16-byte aligned
  uintptr_t* sp = top - 9;
  sp[0] = fcw;
  sp[1] = mxcsr;
  sp[2] = 0;                                          // r15
  sp[3] = 0;                                          // r14
  sp[4] = reinterpret_cast<uintptr_t>(&fiber_main);   // r13: entry
  sp[5] = reinterpret_cast<uintptr_t>(f);             // r12: its argument
  sp[6] = 0;                                          // rbx
  sp[7] = 0;                                          // rbp
  sp[8] = reinterpret_cast<uintptr_t>(&vbemu_trampoline);
  f->sp = sp;
  set_state(f, kRunnable);
  f->fake_stack = nullptr;
}

// ---------------------------------------------------------------------------- sync

// a pending collective of the warp that names `lane` in its mask without having it as member
Group* waiting_for(int warp, int lane) {
  for (Group& g : rt.groups[warp])
    if (((g.mask & ~g.members) >> lane) & 1u) return &g;
  return nullptr;
}

// a thread that leaves (exits, or reaches __syncthreads) must not be awaited by a collective
void check_not_named(Fiber* me, const char* what) {
  const int warp = me->tid >> 5, lane = me->tid & 31;
  if (Group* g = waiting_for(warp, lane)) {
    fail("warp divergence: lane %d %s while lanes 0x%08x of its warp wait for it at %s (%s:%d, "
         "mask 0x%08x)",
         lane, what, g->members, coll_name(g->kind), g->file, g->line, g->mask);
  }
}

void release_barrier() {
  for (int t = 0; t < rt.n; ++t)
    if (rt.pool[t]->state == kAtBarrier) set_state(rt.pool[t], kRunnable);
  rt.bar_count = 0;
  rt.bar_file = nullptr;
  ++rt.stats.barriers;
}

uint64_t lane_result(const Group& g, int base, int lane) {
  const Fiber* f = rt.pool[base + lane];
  const int w = f->width, seg = lane & ~(w - 1);
  int src = lane;
  switch (g.kind) {
    case kShflDown: src = (lane - seg) + f->arg < w ? lane + f->arg : lane; break;
    case kShflUp: src = (lane - seg) - f->arg >= 0 ? lane - f->arg : lane; break;
    case kShflXor: src = (lane ^ f->arg) < seg + w ? lane ^ f->arg : lane; break;
    case kShflIdx: src = seg + (f->arg & (w - 1)); break;
    case kAny:
    case kAll:
    case kBallot: {
      uint64_t any = 0, all = 1, ballot = 0;
      for (int l = 0; l < 32; ++l) {
        if (!((g.mask >> l) & 1u)) continue;
        const bool p = rt.pool[base + l]->bits != 0;
        any |= p;
        all &= p;
        ballot |= static_cast<uint64_t>(p) << l;
      }
      return g.kind == kAny ? any : g.kind == kAll ? all : ballot;
    }
    case kSyncWarp: return 0;
  }
  if (src < 0 || src > 31 || !((g.mask >> src) & 1u)) {
    fail("%s at %s:%d: lane %d reads lane %d, which is not in the mask 0x%08x",
         coll_name(g.kind), g.file, g.line, lane, src, g.mask);
  }
  return rt.pool[base + src]->bits;
}

}  // namespace

// ---------------------------------------------------------------------------- API

void fail(const char* fmt, ...) {
  char where[256];
  describe(where, sizeof where);
  std::fprintf(stderr, "vbemu: FAIL (%s): ", where);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(86);
}

void syncthreads(const char* file, int line) {
  Fiber* me = rt.cur;
  if (!me) fail("__syncthreads outside a kernel");
  check_not_named(me, "reached __syncthreads");
  if (rt.bar_count > 0 && (rt.bar_line != line || std::strcmp(rt.bar_file, file) != 0)) {
    fail("threads of one block wait at different __syncthreads: %s:%d and %s:%d", rt.bar_file,
         rt.bar_line, file, line);
  }
  rt.bar_file = file;
  rt.bar_line = line;
  ++rt.bar_count;
  set_state(me, kAtBarrier);
  if (rt.bar_count == rt.live) {
    release_barrier();
  } else {
    yield();
  }
}

uint64_t collective(Coll kind, const char* file, int line, unsigned mask, uint64_t bits, int arg,
                    int width) {
  Fiber* me = rt.cur;
  if (!me) fail("%s outside a kernel", coll_name(kind));
  const int lane = me->tid & 31, warp = me->tid >> 5, base = me->tid - lane;
  if (!((mask >> lane) & 1u)) {
    fail("%s at %s:%d: the mask 0x%08x does not name the calling lane %d", coll_name(kind), file,
         line, mask, lane);
  }
  if (width < 1 || width > 32 || (width & (width - 1))) {
    fail("%s at %s:%d: width %d is not a power of 2 <= 32", coll_name(kind), file, line, width);
  }
  const unsigned bit = 1u << lane;
  Group* g = nullptr;
  for (Group& c : rt.groups[warp]) {
    if (c.kind == kind && c.mask == mask && c.line == line && !std::strcmp(c.file, file)) {
      g = &c;
    } else if ((c.mask & bit) && (mask & c.members)) {
      // lanes of c wait for this lane, which would wait for them here: they diverged
      fail("warp divergence: lane %d calls %s (%s:%d, mask 0x%08x) while lanes 0x%08x of its "
           "mask wait for it at %s (%s:%d, mask 0x%08x)",
           lane, coll_name(kind), file, line, mask, c.members & mask, coll_name(c.kind), c.file,
           c.line, c.mask);
    }
  }
  if (!g) {
    // the first lane to arrive: every named lane must exist, be alive and not wait at a barrier
    for (int l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1u) || l == lane) continue;
      if (base + l >= rt.n) {
        fail("%s at %s:%d: the mask 0x%08x names lane %d, which does not exist (%d threads)",
             coll_name(kind), file, line, mask, l, rt.n);
      }
      const Fiber* o = rt.pool[base + l];
      if (o->state == kExited) {
        fail("%s at %s:%d: lane %d named in the mask 0x%08x has exited", coll_name(kind), file,
             line, l, mask);
      }
      if (o->state == kAtBarrier) {
        fail("warp divergence: lane %d calls %s (%s:%d) while lane %d of its mask waits at "
             "__syncthreads (%s:%d)",
             lane, coll_name(kind), file, line, l, rt.bar_file, rt.bar_line);
      }
    }
    rt.groups[warp].push_back(Group{mask, 0u, kind, file, line});
    g = &rt.groups[warp].back();
  }
  me->kind = kind;
  me->arg = arg;
  me->width = width;
  me->bits = bits;
  set_state(me, kAtColl);
  g->members |= bit;
  if (g->members == mask) {
    for (int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) rt.pool[base + l]->result = lane_result(*g, base, l);
    for (int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) set_state(rt.pool[base + l], kRunnable);
    auto& v = rt.groups[warp];
    v.erase(v.begin() + (g - v.data()));
    ++rt.stats.collectives;
  } else {
    yield();
  }
  return me->result;
}

namespace {

VBEMU_NO_ASAN void poison_shared() {
  if (!__start_vbemu_shared || !__stop_vbemu_shared) return;
  for (volatile char* p = __start_vbemu_shared; p < __stop_vbemu_shared; ++p) *p = '\xff';
}

[[noreturn]] void deadlock() {
  int at_bar = 0, at_coll = 0;
  for (int t = 0; t < rt.n; ++t) {
    at_bar += rt.pool[t]->state == kAtBarrier;
    at_coll += rt.pool[t]->state == kAtColl;
  }
  fail("deadlock: %d live threads, %d wait at __syncthreads, %d at warp collectives", rt.live,
       at_bar, at_coll);
}

int first_runnable() {
  for (size_t w = 0; w < rt.runnable.size(); ++w)
    if (rt.runnable[w]) return static_cast<int>(64 * w + __builtin_ctzll(rt.runnable[w]));
  return -1;
}

void run_block() {
  poison_shared();
  std::fill(rt.runnable.begin(), rt.runnable.end(), 0);
  for (int t = 0; t < rt.n; ++t) init_fiber(rt.pool[t]);
  for (auto& v : rt.groups) v.clear();
  rt.live = rt.n;
  rt.bar_count = 0;
  rt.bar_file = nullptr;
  while (rt.live > 0) {
    if (rt.round_robin) {
      bool ran = false;
      for (int t = 0; t < rt.n; ++t) {
        if (rt.pool[t]->state == kRunnable) {
          resume(rt.pool[t]);
          ran = true;
        }
      }
      if (!ran) deadlock();
    } else {
      const int t = first_runnable();
      if (t < 0) deadlock();
      resume(rt.pool[t]);
    }
  }
  ++rt.stats.blocks;
}

}  // namespace

void run_grid(const char* name, dim3 grid, dim3 block, size_t dyn_smem, void (*entry)(void*),
              void* ctx) {
  if (rt.kernel) fail("kernel %s launched from inside kernel %s", name, rt.kernel);
  const uint64_t nt = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (nt == 0 || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.x > 0x7fffffffu || grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535) {
    rt.last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (dyn_smem) fail("kernel %s: dynamic shared memory is not emulated", name);
  rt.kernel = name;
  rt.n = static_cast<int>(nt);
  rt.runnable.assign((nt + 63) / 64, 0);
  if (const char* e = std::getenv("VBEMU_SCHEDULE")) {
    if (std::strcmp(e, "round") && std::strcmp(e, "depth")) fail("VBEMU_SCHEDULE=%s: use depth or round", e);
    rt.round_robin = !std::strcmp(e, "round");
  }
  while (rt.pool.size() < nt) rt.pool.push_back(new_fiber());
  for (int t = 0; t < rt.n; ++t) {
    rt.pool[t]->tid = t;
    rt.pool[t]->idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
  }
  rt.groups.assign((nt + 31) / 32, {});
  for (auto& v : rt.groups) v.reserve(32);
  rt.entry = entry;
  rt.entry_ctx = ctx;
  g_block_dim = block;
  g_grid_dim = grid;
  const uint64_t n_blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  uint64_t first = 0, last = n_blocks;
  if (rt.filter_grid && rt.filter_grid == grid.x) {
    first = rt.filter_first < n_blocks ? rt.filter_first : n_blocks;
    last = rt.filter_last < n_blocks ? rt.filter_last : n_blocks;
  }
  for (uint64_t b = first; b < last; ++b) {
    g_block_idx = dim3(static_cast<unsigned>(b % grid.x),
                       static_cast<unsigned>((b / grid.x) % grid.y),
                       static_cast<unsigned>(b / (static_cast<uint64_t>(grid.x) * grid.y)));
    run_block();
  }
  ++rt.stats.launches;
  rt.kernel = nullptr;
}

cudaError_t take_last_error() {
  cudaError_t e = rt.last_error;
  rt.last_error = cudaSuccess;
  return e;
}
void set_last_error(cudaError_t e) { rt.last_error = e; }

void set_block_filter(unsigned grid_x, uint64_t first, uint64_t last) {
  rt.filter_grid = grid_x;
  rt.filter_first = first;
  rt.filter_last = last;
}

const Stats& stats() { return rt.stats; }

}  // namespace vbemu
