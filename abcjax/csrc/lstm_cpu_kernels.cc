// The gate arithmetic of one LSTM time step on the CPU, forward and backward, as XLA FFI handlers
// (abcjax/cpu_kernels.py registers them; abcjax/lstm.py calls them inside its scans), and the
// sampler's cell step over independent rows.
//
// Why: XLA:CPU splits a step's gate arithmetic into about ten small kernels (each sigmoid, the
// cell update, every write into the scan's buffers), several of them single-threaded, with a
// thread-pool round trip each. Here each step is one call that reads and writes each value once,
// vectorized, on all the pool's threads: on a 2-core CPU the default model's gate arithmetic
// takes about half the time it takes as XLA's kernels.
//
// Layouts (all float32, row-major, H hidden units, B rows of the batch, W = 4H, gates i, f, g, o):
// - feature-major [W, B] or [H, B]: the recurrent matmul's result W^T h, cells, hidden states;
// - the forward scan's buffer [T, B, W]: row t holds step t's gate inputs (x W_in + b) and is
//   overwritten with the step's activations, feature-major ([W, B]);
// - the backward scan takes that buffer and overwrites row t's activations with the step's gate
//   gradients, batch-major ([B, W]), the layout of the weight-gradient matmul after the scan.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One build runs everywhere: the loader picks the widest instruction set the CPU has.
#define ABCJAX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ABCJAX_CLONES
#endif

namespace {

typedef float Floats __attribute__((vector_size(64)));
typedef int32_t Ints __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
constexpr int64_t kUnitsPerChunk = 64;  // hidden units per task: 16 tasks for the default model

inline Floats splat(float x) { return Floats{} + x; }

// exp with a relative error of about 1e-7 (Cephes' expf), in vector arithmetic only.
inline Floats exp_approx(Floats x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  const float round_to_nearest = 12582912.0f;  // 1.5 * 2^23
  Floats n = (x * 1.44269504088896341f + round_to_nearest) - round_to_nearest;
  Floats r = x - n * 0.693359375f + n * 2.12194440e-4f;
  Floats p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  Ints bits = (__builtin_convertvector(n, Ints) + 127) << 23;  // 2^n
  Floats scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline Floats sigmoid(Floats x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh to about 1e-7 relative: Cephes' tanhf polynomial near 0, where 1 - 2/(e^2x + 1) cancels.
inline Floats tanh(Floats x) {
  Floats magnitude = x < 0.0f ? -x : x;
  Floats z = x * x;
  Floats near_zero =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f) * z * x + x;
  Floats far = 1.0f - 2.0f / (exp_approx(2.0f * magnitude) + 1.0f);
  far = x < 0.0f ? -far : far;
  return magnitude < 0.625f ? near_zero : far;
}

// Up to kLanes consecutive floats: full vectors, or the tail of a range.
struct Lanes {
  int64_t count;
  Floats load(const float* p) const {
    Floats v{};
    if (count == kLanes) {
      std::memcpy(&v, p, sizeof v);  // a constant size: one vector load
    } else {
      std::memcpy(&v, p, count * sizeof(float));
    }
    return v;
  }
  void store(float* p, Floats v) const {
    if (count == kLanes) {
      std::memcpy(p, &v, sizeof v);
    } else {
      std::memcpy(p, &v, count * sizeof(float));
    }
  }
};

// One round of a 16 x 16 transpose in registers: swaps the off-diagonal blocks of size `block`
// between rows i and i + block (block = 8, 4, 2, 1 in turn transposes the whole tile).
template <int block>
__attribute__((always_inline)) inline void swap_blocks(Floats* rows) {
  const Ints lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const Ints right = (lane & block) != 0;
  const Ints upper = right ? kLanes + lane - block : lane;  // lanes 16.. index the second operand
  const Ints lower = right ? kLanes + lane : lane + block;
  for (int i = 0; i < kLanes; ++i) {
    if (i & block) continue;
    const Floats a = rows[i], b = rows[i + block];
    rows[i] = __builtin_shuffle(a, b, upper);
    rows[i + block] = __builtin_shuffle(a, b, lower);
  }
}

// to[c * to_stride + r] = from[r * from_stride + c] for r < rows, c < columns: whole 16 x 16 tiles
// in registers, the edges one float at a time.
__attribute__((always_inline)) inline void transpose(const float* from, int64_t from_stride, float* to, int64_t to_stride, int64_t rows,
                      int64_t columns) {
  const int64_t tiled_rows = rows / kLanes * kLanes, tiled_columns = columns / kLanes * kLanes;
  for (int64_t r0 = 0; r0 < tiled_rows; r0 += kLanes) {
    for (int64_t c0 = 0; c0 < tiled_columns; c0 += kLanes) {
      Floats tile[kLanes];
      for (int i = 0; i < kLanes; ++i) std::memcpy(&tile[i], from + (r0 + i) * from_stride + c0, sizeof(Floats));
      swap_blocks<8>(tile);
      swap_blocks<4>(tile);
      swap_blocks<2>(tile);
      swap_blocks<1>(tile);
      for (int i = 0; i < kLanes; ++i) std::memcpy(to + (c0 + i) * to_stride + r0, &tile[i], sizeof(Floats));
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t first_column = r < tiled_rows ? tiled_columns : 0;
    for (int64_t c = first_column; c < columns; ++c) to[c * to_stride + r] = from[r * from_stride + c];
  }
}

// Runs work(first_unit, end_unit) over [0, units) in chunks, on the calling thread and on the
// pool's threads. The caller takes chunks too, so the call finishes even if no pool thread is free;
// a pool task that starts late finds no chunk left and touches nothing.
template <typename Work>
void parallel_units(ffi::ThreadPool& pool, int64_t units, const Work& work) {
  const int64_t chunks = (units + kUnitsPerChunk - 1) / kUnitsPerChunk;
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  auto drain = [progress, chunks, units, &work]() {
    for (int64_t c; (c = progress->next.fetch_add(1)) < chunks; progress->done.fetch_add(1)) {
      work(c * kUnitsPerChunk, std::min(units, (c + 1) * kUnitsPerChunk));
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks - 1);
  for (int64_t h = 0; h < helpers; ++h) {
    auto task = drain;
    pool.Schedule(std::move(task));
  }
  drain();
  while (progress->done.load() < chunks) std::this_thread::yield();
}

struct ForwardStep {
  int64_t time_steps, batch, hidden;
  const float* recurrent;  // [W, B]
  const float* cell;       // [H, B]
  const float* hidden_in;  // [H, B]
  float* row;              // [B, W] in, [W, B] out
  float* gate_inputs;      // [W, B] scratch
  float* new_cell;         // [H, B]
  float* new_hidden;       // [H, B]
  float* outputs_row;      // [B, H]
  float* cells_row;        // [H, B]
  float* previous_hiddens; // [H, T, B], column t written
  int64_t t;

  ABCJAX_CLONES void stage_inputs(int64_t first, int64_t end) const {
    for (int64_t gate = 0; gate < 4; ++gate) {
      const int64_t column = gate * hidden + first;
      transpose(row + column, 4 * hidden, gate_inputs + column * batch, batch, batch, end - first);
    }
  }

  ABCJAX_CLONES void units(int64_t first, int64_t end) const {
    const int64_t n = hidden * batch;  // offset from one gate's block to the next
    // Before the loop: the new hidden state may overwrite the incoming one (aliased).
    for (int64_t j = first; j < end; ++j) {
      std::memcpy(previous_hiddens + (j * time_steps + t) * batch, hidden_in + j * batch, batch * sizeof(float));
    }
    for (int64_t k = first * batch; k < end * batch; k += kLanes) {
      const Lanes v{std::min(kLanes, end * batch - k)};
      const float* in = gate_inputs + k;
      const float* rec = recurrent + k;
      Floats i = sigmoid(v.load(in) + v.load(rec));
      Floats f = sigmoid(v.load(in + n) + v.load(rec + n));
      Floats g = tanh(v.load(in + 2 * n) + v.load(rec + 2 * n));
      Floats o = sigmoid(v.load(in + 3 * n) + v.load(rec + 3 * n));
      v.store(row + k, i);
      v.store(row + n + k, f);
      v.store(row + 2 * n + k, g);
      v.store(row + 3 * n + k, o);
      Floats c = f * v.load(cell + k) + i * g;
      v.store(new_cell + k, c);
      v.store(cells_row + k, c);
      v.store(new_hidden + k, o * tanh(c));
    }
    transpose(new_hidden + first * batch, batch, outputs_row + first, hidden, end - first, batch);
  }
};

struct BackwardStep {
  int64_t batch, hidden;
  const float* d_output_row;     // [B, H]
  const float* d_hidden_next;    // [H, B]
  const float* d_cell_next;      // [H, B]
  const float* cell;             // [H, B]
  const float* previous_cell;    // [H, B]
  float* row;                    // [W, B] activations in, [B, W] gate gradients out
  float* d_gates;                // [W, B]
  float* d_cell_previous;        // [H, B]
  float* d_output;               // [H, B] scratch: the output gradients, feature-major

  ABCJAX_CLONES void units(int64_t first, int64_t end) const {
    const int64_t n = hidden * batch;
    // This chunk's output gradients, transposed to feature-major.
    transpose(d_output_row + first, hidden, d_output + first * batch, batch, batch, end - first);
    for (int64_t k = first * batch; k < end * batch; k += kLanes) {
      const Lanes v{std::min(kLanes, end * batch - k)};
      Floats i = v.load(row + k), f = v.load(row + n + k), g = v.load(row + 2 * n + k), o = v.load(row + 3 * n + k);
      Floats tanh_cell = tanh(v.load(cell + k));
      Floats d_hidden = v.load(d_output + k) + v.load(d_hidden_next + k);
      Floats d_cell = v.load(d_cell_next + k) + d_hidden * o * (1.0f - tanh_cell * tanh_cell);
      v.store(d_gates + k, d_cell * g * i * (1.0f - i));
      v.store(d_gates + n + k, d_cell * v.load(previous_cell + k) * f * (1.0f - f));
      v.store(d_gates + 2 * n + k, d_cell * i * (1.0f - g * g));
      v.store(d_gates + 3 * n + k, d_hidden * tanh_cell * o * (1.0f - o));
      v.store(d_cell_previous + k, d_cell * f);
    }
  }

  ABCJAX_CLONES void write_batch_major(int64_t first, int64_t end) const {
    for (int64_t gate = 0; gate < 4; ++gate) {
      const int64_t column = gate * hidden + first;
      transpose(d_gates + column * batch, batch, row + column, 4 * hidden, end - first, batch);
    }
  }
};

// The sampler's step: one LSTM cell for independent rows (tunes), batch-major.
struct CellStep {
  int64_t hidden;
  const float* gates;  // [rows, W]: pre-activations x W_in + b + h W
  const float* cell;   // [rows, H]
  float* new_cell;     // [rows, H]
  float* new_hidden;   // [rows, H]

  ABCJAX_CLONES void rows(int64_t first, int64_t end) const {
    for (int64_t r = first; r < end; ++r) {
      const float* in = gates + r * 4 * hidden;
      for (int64_t j = 0; j < hidden; j += kLanes) {
        const Lanes v{std::min(kLanes, hidden - j)};
        Floats i = sigmoid(v.load(in + j));
        Floats f = sigmoid(v.load(in + hidden + j));
        Floats g = tanh(v.load(in + 2 * hidden + j));
        Floats o = sigmoid(v.load(in + 3 * hidden + j));
        Floats c = f * v.load(cell + r * hidden + j) + i * g;
        v.store(new_cell + r * hidden + j, c);
        v.store(new_hidden + r * hidden + j, o * tanh(c));
      }
    }
  }
};

using F32 = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

// Step t of the forward scan. The four buffers come in as arguments and go out, the same memory
// (aliased), as results: gates [T, B, W] (row t: inputs in, activations out), outputs [T, B, H],
// cells [T, H, B] and previous hiddens [H, T, B] (step t's slice written). The new cell and hidden
// state are written over the incoming ones (aliased too), so the scan's carry is never copied.
ffi::Error forward_step(ffi::ThreadPool pool, F32 recurrent, ffi::Buffer<ffi::S32> step, F32 cell, F32 hidden,
                        F32, F32, F32, F32, F32Result gates, F32Result outputs, F32Result cells,
                        F32Result previous_hiddens, F32Result new_cell, F32Result new_hidden, F32Result scratch) {
  const auto dims = gates->dimensions();
  const int64_t time_steps = dims[0], batch = dims[1], units = dims[2] / 4;
  const int64_t t = step.typed_data()[0];
  if (t < 0 || t >= time_steps) return ffi::Error::InvalidArgument("LSTM forward step index out of range");
  const ForwardStep s{time_steps,
                      batch,
                      units,
                      recurrent.typed_data(),
                      cell.typed_data(),
                      hidden.typed_data(),
                      gates->typed_data() + t * batch * 4 * units,
                      scratch->typed_data(),
                      new_cell->typed_data(),
                      new_hidden->typed_data(),
                      outputs->typed_data() + t * batch * units,
                      cells->typed_data() + t * units * batch,
                      previous_hiddens->typed_data(),
                      t};
  // Row t is read whole before any of it is overwritten: the two layouts overlap.
  parallel_units(pool, units, [&](int64_t first, int64_t end) { s.stage_inputs(first, end); });
  parallel_units(pool, units, [&](int64_t first, int64_t end) { s.units(first, end); });
  return ffi::Error::Success();
}

// Step t of the backward scan: d_outputs [T, B, H], the carried gradients [H, B], cells [T, H, B]
// and the initial cell [H, B] in; the buffer [T, W, B] (aliased) has row t's activations replaced
// by the gate gradients; the gate gradients feature-major and the cell gradient carried back out,
// over the carried-in one (aliased).
ffi::Error backward_step(ffi::ThreadPool pool, F32 d_outputs, ffi::Buffer<ffi::S32> step, F32 d_hidden_next,
                         F32 d_cell_next, F32 cells, F32 initial_cell, F32, F32Result buffer, F32Result d_gates,
                         F32Result d_cell_previous, F32Result scratch) {
  const auto dims = buffer->dimensions();
  const int64_t time_steps = dims[0], units = dims[1] / 4, batch = dims[2];
  const int64_t t = step.typed_data()[0];
  if (t < 0 || t >= time_steps) return ffi::Error::InvalidArgument("LSTM backward step index out of range");
  const int64_t n = units * batch;
  const BackwardStep s{batch,
                       units,
                       d_outputs.typed_data() + t * batch * units,
                       d_hidden_next.typed_data(),
                       d_cell_next.typed_data(),
                       cells.typed_data() + t * n,
                       t == 0 ? initial_cell.typed_data() : cells.typed_data() + (t - 1) * n,
                       buffer->typed_data() + t * 4 * n,
                       d_gates->typed_data(),
                       d_cell_previous->typed_data(),
                       scratch->typed_data()};
  parallel_units(pool, units, [&](int64_t first, int64_t end) { s.units(first, end); });
  // Row t's activations are all read before the gradients overwrite them.
  parallel_units(pool, units, [&](int64_t first, int64_t end) { s.write_batch_major(first, end); });
  return ffi::Error::Success();
}

// The cell step of every row: gates [..., W] and cell [..., H] in; the new cell and hidden state
// [..., H] out. Rows are split over the threads.
ffi::Error cell_step(ffi::ThreadPool pool, F32 gates, F32 cell, F32Result new_cell, F32Result new_hidden) {
  const auto dims = cell.dimensions();
  const int64_t units = dims.size() == 0 ? 1 : dims.back();
  const int64_t rows = units == 0 ? 0 : static_cast<int64_t>(cell.element_count()) / units;
  const CellStep s{units, gates.typed_data(), cell.typed_data(), new_cell->typed_data(), new_hidden->typed_data()};
  parallel_units(pool, rows, [&](int64_t first, int64_t end) { s.rows(first, end); });
  return ffi::Error::Success();
}

}  // namespace

#ifndef ABCJAX_KERNELS_SOURCE_SHA256
#define ABCJAX_KERNELS_SOURCE_SHA256 "unknown"  // built other than by setup.py
#endif

// The SHA-256 of this file as it was when built (setup.py passes it): abcjax/cpu_kernels.py does
// not use a library built from other source, such as one an editable install kept after a pull.
extern "C" const char* AbcjaxLstmKernelsSource() { return ABCJAX_KERNELS_SOURCE_SHA256; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(AbcjaxLstmForwardStep, forward_step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()  // recurrent [W, B]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t
                                  .Arg<F32>()  // cell [H, B]
                                  .Arg<F32>()  // hidden [H, B]
                                  .Arg<F32>()  // gates [T, B, W], aliased to the first result
                                  .Arg<F32>()  // outputs [T, B, H], aliased
                                  .Arg<F32>()  // cells [T, H, B], aliased
                                  .Arg<F32>()  // previous hiddens [H, T, B], aliased
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()  // new cell [H, B]
                                  .Ret<F32>()  // new hidden [H, B]
                                  .Ret<F32>());  // scratch [W, B]

XLA_FFI_DEFINE_HANDLER_SYMBOL(AbcjaxLstmBackwardStep, backward_step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()  // d_outputs [T, B, H]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t
                                  .Arg<F32>()  // d_hidden_next [H, B]
                                  .Arg<F32>()  // d_cell_next [H, B]
                                  .Arg<F32>()  // cells [T, H, B]
                                  .Arg<F32>()  // initial cell [H, B]
                                  .Arg<F32>()  // buffer [T, W, B], aliased to the first result
                                  .Ret<F32>()
                                  .Ret<F32>()  // d_gates [W, B]
                                  .Ret<F32>()  // d_cell_previous [H, B]
                                  .Ret<F32>());  // scratch [H, B]

XLA_FFI_DEFINE_HANDLER_SYMBOL(AbcjaxLstmCellStep, cell_step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()  // gates [..., W]
                                  .Arg<F32>()  // cell [..., H]
                                  .Ret<F32>()  // new cell [..., H]
                                  .Ret<F32>());  // new hidden [..., H]
