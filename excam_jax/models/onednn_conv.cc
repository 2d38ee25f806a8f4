// oneDNN's float32 convolutions as three XLA FFI handlers (CPU): forward, backward-data and
// backward-weights, on XLA's NHWC activations and HWIO kernels, square kernel, equal stride and
// dilation in both spatial dimensions, symmetric padding. Built and loaded by
// excam_jax/models/onednn.py, which registers the handlers and calls them from JAX.
//
// Handler arguments, in order (buffers rank 4, float32):
//   forward:          x (N,H,W,C), w (KH,KW,C,O)   -> y (N,OH,OW,O)
//   backward-data:    dy (N,OH,OW,O), w            -> dx (N,H,W,C)
//   backward-weights: x, dy                        -> dw (KH,KW,C,O)
// Attributes (int64): stride, dilation (1 = none, XLA's convention), padding (cells on every
// side), any_layout (0: activations stay NHWC inside oneDNN; 1: oneDNN picks their layout too,
// at the price of reordering them on every call).

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

enum Kind : int64_t { kForward, kBackwardData, kBackwardWeights };

// Everything a primitive depends on; also the key of the primitive cache.
struct Shape {
  int64_t kind, n, h, w, c, kh, kw, o, oh, ow, stride, dilation, padding, any_layout;
  std::array<int64_t, 14> Key() const {
    return {kind, n, h, w, c, kh, kw, o, oh, ow, stride, dilation, padding, any_layout};
  }
};

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// One primitive argument: XLA's buffer (its layout `user`) and the layout the primitive wants
// (`inner`); a reorder between them exists only when the two differ.
struct Arg {
  int id;
  memory::desc user, inner;
  dnnl::reorder reorder;
  bool output;
};

struct Plan {
  dnnl::primitive primitive;
  std::array<Arg, 3> args;  // The handler's two inputs, then its output.
  memory::desc scratchpad;
};

Arg MakeArg(int id, const memory::desc& user, const memory::desc& inner, bool output) {
  Arg arg{id, user, inner, {}, output};
  if (user != inner) {
    auto& e = Engine();
    arg.reorder = dnnl::reorder(output ? dnnl::reorder::primitive_desc(e, inner, e, user)
                                       : dnnl::reorder::primitive_desc(e, user, e, inner));
  }
  return arg;
}

Plan MakePlan(const Shape& s) {
  auto& e = Engine();
  const auto f32 = memory::data_type::f32;
  const memory::dims xd{s.n, s.c, s.h, s.w}, wd{s.o, s.c, s.kh, s.kw}, yd{s.n, s.o, s.oh, s.ow};
  const memory::desc x(xd, f32, Tag::nhwc), y(yd, f32, Tag::nhwc), w(wd, f32, Tag::hwio);
  // Activations are the big tensors: by default they stay in XLA's NHWC (oneDNN has NHWC
  // kernels; PyTorch's channels-last path uses them), so no call reorders them. Kernels are
  // small: the primitive chooses their layout (`any`) and they are reordered on every call.
  const memory::desc xa = s.any_layout ? memory::desc(xd, f32, Tag::any) : x;
  const memory::desc ya = s.any_layout ? memory::desc(yd, f32, Tag::any) : y;
  const memory::desc wa(wd, f32, Tag::any);
  const memory::dims strides{s.stride, s.stride};
  const memory::dims dilates{s.dilation - 1, s.dilation - 1};  // oneDNN counts from 0.
  const memory::dims pad{s.padding, s.padding};
  // The caller provides the scratchpad: concurrent calls then share no library buffer.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;
  // The forward descriptor is also the backward primitives' required hint.
  dnnl::convolution_forward::primitive_desc fwd(e, dnnl::prop_kind::forward_training, algo, xa,
                                                wa, ya, strides, dilates, pad, pad, attr);
  Plan plan;
  if (s.kind == kForward) {
    plan.primitive = dnnl::convolution_forward(fwd);
    plan.args = {MakeArg(DNNL_ARG_SRC, x, fwd.src_desc(), false),
                 MakeArg(DNNL_ARG_WEIGHTS, w, fwd.weights_desc(), false),
                 MakeArg(DNNL_ARG_DST, y, fwd.dst_desc(), true)};
    plan.scratchpad = fwd.scratchpad_desc();
  } else if (s.kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(e, algo, xa, wa, ya, strides, dilates,
                                                       pad, pad, fwd, attr);
    plan.primitive = dnnl::convolution_backward_data(pd);
    plan.args = {MakeArg(DNNL_ARG_DIFF_DST, y, pd.diff_dst_desc(), false),
                 MakeArg(DNNL_ARG_WEIGHTS, w, pd.weights_desc(), false),
                 MakeArg(DNNL_ARG_DIFF_SRC, x, pd.diff_src_desc(), true)};
    plan.scratchpad = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(e, algo, xa, wa, ya, strides, dilates,
                                                          pad, pad, fwd, attr);
    plan.primitive = dnnl::convolution_backward_weights(pd);
    plan.args = {MakeArg(DNNL_ARG_SRC, x, pd.src_desc(), false),
                 MakeArg(DNNL_ARG_DIFF_DST, y, pd.diff_dst_desc(), false),
                 MakeArg(DNNL_ARG_DIFF_WEIGHTS, w, pd.diff_weights_desc(), true)};
    plan.scratchpad = pd.scratchpad_desc();
  }
  return plan;
}

// Creating a primitive (oneDNN generates its code) costs far more than running it: one plan per
// shape, kept for the process. Plans are never freed (no teardown order to get wrong at exit).
const Plan& GetPlan(const Shape& s) {
  static std::mutex* mu = new std::mutex;
  static auto* plans = new std::map<std::array<int64_t, 14>, std::unique_ptr<Plan>>;
  std::lock_guard<std::mutex> lock(*mu);
  auto& plan = (*plans)[s.Key()];
  if (!plan) plan = std::make_unique<Plan>(MakePlan(s));
  return *plan;
}

// Grow-only per-thread buffers (reordered arguments: slots 0-2; scratchpad: 3), so a call
// neither allocates nor page-faults fresh memory, and concurrent calls share nothing.
void* ThreadBuffer(int slot, size_t bytes) {
  struct Block {
    void* data = nullptr;
    size_t size = 0;
    ~Block() { std::free(data); }
  };
  static thread_local std::array<Block, 4> blocks;
  Block& b = blocks[slot];
  if (bytes > b.size) {
    std::free(b.data);
    b.size = (bytes + 63) / 64 * 64;
    b.data = std::aligned_alloc(64, b.size);
    if (b.data == nullptr) {
      b.size = 0;
      throw std::bad_alloc();
    }
  }
  return b.data;
}

// oneDNN (its OpenMP build) runs on the calling thread's OpenMP team: sized to XLA's intra-op
// pool, which this call was scheduled from, so both use the cores XLA was given; at most the
// processors this process may run on (with several CPU devices XLA's pool is larger).
// EXCAM_ONEDNN_THREADS=n (read once) overrides it: every call waits for its whole team, which
// costs milliseconds per call when other processes hold the cores; 1 avoids that.
int64_t TeamSize(ffi::ThreadPool& pool) {
  static const int64_t forced = [] {
    const char* value = std::getenv("EXCAM_ONEDNN_THREADS");
    return value == nullptr ? int64_t{0} : int64_t{std::atoll(value)};
  }();
  return forced > 0 ? forced : std::min<int64_t>(pool.num_threads(), omp_get_num_procs());
}

ffi::Error Run(ffi::ThreadPool pool, const Shape& s, std::array<void*, 3> data, size_t out_bytes,
               bool empty_input) {
  if (empty_input) {  // A zero-sized input: the (possibly non-empty) output is all zeros.
    std::memset(data[2], 0, out_bytes);
    return ffi::Error::Success();
  }
  // Set before the plan is made too: a primitive keeps the team size it was created for.
  const int64_t threads = TeamSize(pool);
  if (threads > 0 && omp_get_max_threads() != threads) omp_set_num_threads(threads);
  try {
    const Plan& plan = GetPlan(s);
    auto& e = Engine();
    static thread_local dnnl::stream stream(e);
    std::unordered_map<int, memory> args;
    for (int i = 0; i < 3; ++i) {
      const Arg& a = plan.args[i];
      memory user(a.user, e, data[i]);
      if (!a.reorder) {
        args.emplace(a.id, user);
        continue;
      }
      memory inner(a.inner, e, ThreadBuffer(i, a.inner.get_size()));
      if (!a.output) a.reorder.execute(stream, user, inner);
      args.emplace(a.id, inner);
    }
    if (plan.scratchpad.get_size() > 0) {
      args.emplace(DNNL_ARG_SCRATCHPAD,
                   memory(plan.scratchpad, e, ThreadBuffer(3, plan.scratchpad.get_size())));
    }
    plan.primitive.execute(stream, args);
    const Arg& out = plan.args[2];
    if (out.reorder) {
      memory user(out.user, e, data[2]);
      out.reorder.execute(stream, args.at(out.id), user);
    }
    stream.wait();
  } catch (const std::exception& err) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + err.what());
  }
  return ffi::Error::Success();
}

template <int64_t kind>
ffi::Error Handler(ffi::ThreadPool pool, ffi::BufferR4<ffi::F32> a, ffi::BufferR4<ffi::F32> b,
                   ffi::ResultBufferR4<ffi::F32> out, int64_t stride, int64_t dilation,
                   int64_t padding, int64_t any_layout) {
  const auto x = kind == kBackwardData ? out->dimensions() : a.dimensions();
  const auto w = kind == kBackwardWeights ? out->dimensions() : b.dimensions();
  const auto y = kind == kForward ? out->dimensions() : kind == kBackwardData ? a.dimensions()
                                                                              : b.dimensions();
  if (w[2] != x[3] || y[3] != w[3] || y[0] != x[0] || stride < 1 || dilation < 1 ||
      padding < 0) {
    return ffi::Error::InvalidArgument("oneDNN convolution: inconsistent shapes or attributes");
  }
  const Shape s{kind, x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2],
                stride, dilation, padding, any_layout};
  return Run(pool, s, {a.untyped_data(), b.untyped_data(), out->untyped_data()},
             out->size_bytes(), a.element_count() == 0 || b.element_count() == 0);
}

}  // namespace

#define EXCAM_ONEDNN_BINDING                                                          \
  ffi::Ffi::Bind()                                                                    \
      .Ctx<ffi::ThreadPool>()                                                         \
      .Arg<ffi::BufferR4<ffi::F32>>()                                                 \
      .Arg<ffi::BufferR4<ffi::F32>>()                                                 \
      .Ret<ffi::BufferR4<ffi::F32>>()                                                 \
      .Attr<int64_t>("stride")                                                        \
      .Attr<int64_t>("dilation")                                                      \
      .Attr<int64_t>("padding")                                                       \
      .Attr<int64_t>("any_layout")

XLA_FFI_DEFINE_HANDLER_SYMBOL(ExcamOnednnConvForward, Handler<kForward>, EXCAM_ONEDNN_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ExcamOnednnConvBackwardData, Handler<kBackwardData>,
                              EXCAM_ONEDNN_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ExcamOnednnConvBackwardWeights, Handler<kBackwardWeights>,
                              EXCAM_ONEDNN_BINDING);
