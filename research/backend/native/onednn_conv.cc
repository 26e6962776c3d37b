// 2-D convolutions for XLA:CPU through oneDNN, as XLA FFI handlers (see research/backend/native/__init__.py).
//
// Three handlers, one per derivative of the trilinear form <conv(x, w), dy>, all float32:
//   ResearchConvForward      x (N, H, W, C) NHWC, w (KH, KW, C, O) HWIO       -> y (N, OH, OW, O)
//   ResearchConvBackwardData dy (N, OH, OW, O), w (KH, KW, C, O)              -> dx (N, H, W, C)
//   ResearchConvBackwardWeights x (N, H, W, C), dy (N, OH, OW, O)             -> dw (KH, KW, C, O)
// Attributes: stride_h, stride_w and zero padding pad_top, pad_bottom, pad_left, pad_right (int64).
// Activations stay NHWC (oneDNN's nhwc format, no copy); the small weights are reordered into the
// layout oneDNN's kernel wants. Primitives are built once per shape and cached; execution takes no lock.

#include <algorithm>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

#if DNNL_VERSION_MAJOR != 2
#error "written against oneDNN 2.x (operation descriptors were removed in 3.0); Debian's libdnnl-dev is 2.6"
#endif

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// The convolution, in oneDNN's logical dimensions.
struct Shape {
  int64_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr;
  auto key() const { return std::make_tuple(n, c, h, w, o, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr); }
  memory::desc x(Tag tag = Tag::nhwc) const { return memory::desc({n, c, h, w}, kF32, tag); }
  memory::desc y(Tag tag = Tag::nhwc) const { return memory::desc({n, o, oh, ow}, kF32, tag); }
  memory::desc k(Tag tag) const { return memory::desc({o, c, kh, kw}, kF32, tag); }
  dnnl::convolution_forward::desc forward_desc() const {
    return dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                           dnnl::algorithm::convolution_direct, x(), k(Tag::any), y(),
                                           {sh, sw}, {pt, pl}, {pb, pr});
  }
};

// One cached primitive with the reorder between the user's HWIO weights and the kernel's layout.
struct Entry {
  dnnl::primitive conv;
  memory::desc kernel_desc, scratch_desc;
  dnnl::primitive reorder;  // HWIO -> kernel layout (forward, backward data) or back (weights)
  bool needs_reorder = false;
};

std::mutex cache_mutex;
std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                    int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>,
         std::shared_ptr<const Entry>>
    cache;

std::shared_ptr<const Entry> Build(Kind kind, const Shape& s) {
  auto& engine = Engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(s.forward_desc(), attr, engine);
  auto entry = std::make_shared<Entry>();
  memory::desc hwio = s.k(Tag::hwio);
  if (kind == kForward) {
    entry->conv = dnnl::convolution_forward(fwd_pd);
    entry->kernel_desc = fwd_pd.weights_desc();
    entry->scratch_desc = fwd_pd.scratchpad_desc();
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, s.x(), s.k(Tag::any),
                                            s.y(), {s.sh, s.sw}, {s.pt, s.pl}, {s.pb, s.pr});
    dnnl::convolution_backward_data::primitive_desc pd(d, attr, engine, fwd_pd);
    entry->conv = dnnl::convolution_backward_data(pd);
    entry->kernel_desc = pd.weights_desc();
    entry->scratch_desc = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::desc d(dnnl::algorithm::convolution_direct, s.x(), s.k(Tag::any),
                                               s.y(), {s.sh, s.sw}, {s.pt, s.pl}, {s.pb, s.pr});
    dnnl::convolution_backward_weights::primitive_desc pd(d, attr, engine, fwd_pd);
    entry->conv = dnnl::convolution_backward_weights(pd);
    entry->kernel_desc = pd.diff_weights_desc();
    entry->scratch_desc = pd.scratchpad_desc();
  }
  entry->needs_reorder = entry->kernel_desc != hwio;
  if (entry->needs_reorder) {
    const memory::desc& from = kind == kBackwardWeights ? entry->kernel_desc : hwio;
    const memory::desc& to = kind == kBackwardWeights ? hwio : entry->kernel_desc;
    entry->reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine, from, engine, to));
  }
  return entry;
}

std::shared_ptr<const Entry> Lookup(Kind kind, const Shape& s) {
  auto key = std::tuple_cat(std::make_tuple(static_cast<int64_t>(kind)), s.key());
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto entry = Build(kind, s);
  cache.emplace(key, entry);
  return entry;
}

// x, y: the activations (input, output); k: the HWIO kernel. For the backward kinds the "output" of
// the handler is dx or dw and the others are inputs; oneDNN's argument names say which is which.
ffi::Error Run(Kind kind, const Shape& s, float* x, float* k, float* y) {
  try {
    auto entry = Lookup(kind, s);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    memory x_mem(s.x(), engine, x), y_mem(s.y(), engine, y), hwio_mem(s.k(Tag::hwio), engine, k);
    memory k_mem = entry->needs_reorder ? memory(entry->kernel_desc, engine) : hwio_mem;
    memory scratch(entry->scratch_desc, engine);
    if (kind != kBackwardWeights && entry->needs_reorder)
      entry->reorder.execute(stream, {{DNNL_ARG_FROM, hwio_mem}, {DNNL_ARG_TO, k_mem}});
    if (kind == kForward) {
      entry->conv.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, k_mem}, {DNNL_ARG_DST, y_mem},
                                   {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (kind == kBackwardData) {
      entry->conv.execute(stream, {{DNNL_ARG_DIFF_SRC, x_mem}, {DNNL_ARG_WEIGHTS, k_mem},
                                   {DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      entry->conv.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_WEIGHTS, k_mem},
                                   {DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (entry->needs_reorder)
        entry->reorder.execute(stream, {{DNNL_ARG_FROM, k_mem}, {DNNL_ARG_TO, hwio_mem}});
    }
    stream.wait();
  } catch (const std::exception& e) {  // dnnl::error, std::bad_alloc: an XLA error, not a terminate
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

Shape MakeShape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k, ffi::Span<const int64_t> y,
                int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Shape{x[0], x[3], x[1], x[2], k[3], k[0], k[1], y[1], y[2], sh, sw, pt, pb, pl, pr};
}

using F32 = ffi::Buffer<ffi::F32, 4>;
using F32Out = ffi::ResultBuffer<ffi::F32, 4>;

// A stride-1 convolution is the input gradient of another one: conv(x, k) with padding q equals the
// backward-data pass of a convolution from y's channels to x's with kernel k flipped in space and
// transposed (HWIO: k'[a, b, o, c] = k[kh-1-a, kw-1-b, c, o]) and padding kh-1-q. oneDNN 2.6's AVX2
// backward-data kernel for NHWC runs up to twice as fast as its forward one on small images
// (32x32x16 -> 16 at batch 128: 7.4 vs 14.0 ms), so stride-1 forward passes take that route.
ffi::Error ForwardAsBackwardData(const Shape& s, float* x, const float* k, float* y) {
  if (s.kh - 1 < std::max(s.pt, s.pb) || s.kw - 1 < std::max(s.pl, s.pr))
    return Run(kForward, s, x, const_cast<float*>(k), y);
  std::vector<float> flipped;
  try {
    flipped.resize(s.kh * s.kw * s.c * s.o);
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  for (int64_t a = 0; a < s.kh; ++a)
    for (int64_t b = 0; b < s.kw; ++b)
      for (int64_t c = 0; c < s.c; ++c)
        for (int64_t o = 0; o < s.o; ++o)
          flipped[((a * s.kw + b) * s.o + o) * s.c + c] =
              k[(((s.kh - 1 - a) * s.kw + (s.kw - 1 - b)) * s.c + c) * s.o + o];
  Shape t{s.n, s.o, s.oh, s.ow, s.c, s.kh, s.kw, s.h, s.w, 1, 1,
          s.kh - 1 - s.pt, s.kh - 1 - s.pb, s.kw - 1 - s.pl, s.kw - 1 - s.pr};
  return Run(kBackwardData, t, y, flipped.data(), x);
}

ffi::Error Forward(F32 x, F32 k, F32Out y, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                   int64_t pr) {
  Shape s = MakeShape(x.dimensions(), k.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr);
  if (sh == 1 && sw == 1 && s.kh * s.kw > 1)
    return ForwardAsBackwardData(s, x.typed_data(), k.typed_data(), y->typed_data());
  return Run(kForward, s, x.typed_data(), k.typed_data(), y->typed_data());
}

ffi::Error BackwardData(F32 dy, F32 k, F32Out dx, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                        int64_t pl, int64_t pr) {
  Shape s = MakeShape(dx->dimensions(), k.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr);
  return Run(kBackwardData, s, dx->typed_data(), k.typed_data(), dy.typed_data());
}

ffi::Error BackwardWeights(F32 x, F32 dy, F32Out dk, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                           int64_t pl, int64_t pr) {
  Shape s = MakeShape(x.dimensions(), dk->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr);
  return Run(kBackwardWeights, s, x.typed_data(), dk->typed_data(), dy.typed_data());
}

// The attributes every handler takes, after its two operands and one result.
#define RESEARCH_CONV_BINDING()                                                                  \
  ffi::Ffi::Bind()                                                                               \
      .Arg<F32>()                                                                                \
      .Arg<F32>()                                                                                \
      .Ret<F32>()                                                                                \
      .Attr<int64_t>("stride_h")                                                                 \
      .Attr<int64_t>("stride_w")                                                                 \
      .Attr<int64_t>("pad_top")                                                                  \
      .Attr<int64_t>("pad_bottom")                                                               \
      .Attr<int64_t>("pad_left")                                                                 \
      .Attr<int64_t>("pad_right")

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvForward, Forward,
                              RESEARCH_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvBackwardData, BackwardData,
                              RESEARCH_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvBackwardWeights, BackwardWeights,
                              RESEARCH_CONV_BINDING());

// The oneDNN version the library was built against and runs with, for the benchmark's records.
extern "C" const char* ResearchOnednnVersion() {
  static std::string text = [] {
    const dnnl_version_t* v = dnnl_version();
    std::string hash = v->hash;
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
           (hash.empty() || hash == "N/A" ? "" : " (" + hash + ")");
  }();
  return text.c_str();
}
