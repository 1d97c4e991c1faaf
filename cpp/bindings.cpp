// pybind11 bindings of the htsr C++ core (module htsr._core). Thin by design: numpy arrays in,
// plain structs and numpy arrays out, the GIL released around native work, batches and fits
// interruptible with Ctrl-C (batches between items, fits between candidates). Argument
// checking lives in python/htsr/core.py; C++ exceptions map to Python: invalid_argument ->
// ValueError, overflow_error -> OverflowError, others -> RuntimeError, Cancelled -> KeyboardInterrupt.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "htsr/batch.hpp"
#include "htsr/bootstrap.hpp"
#include "htsr/cuda.hpp"
#include "htsr/lapack.hpp"
#include "htsr/powerlaw.hpp"
#include "htsr/shuffle.hpp"
#include "htsr/scratch.hpp"
#include "htsr/spectrum.hpp"
#include "htsr/vectors.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace htsr;

namespace {

/// A 2-D numpy array with unit column stride seen as a MatrixView (no copy).
MatrixView view_of(const py::array& a, const std::string& dtype) {
    MatrixView w;
    w.dtype = parse_dtype(dtype);
    if (a.ndim() != 2) throw std::invalid_argument("expected a 2-D array, got " + std::to_string(a.ndim()) + "-D");
    if (std::size_t(a.itemsize()) != dtype_size(w.dtype))
        throw std::invalid_argument("array itemsize does not match dtype " + dtype);
    const auto item = a.itemsize();
    if (a.shape(1) > 1 && a.strides(1) != item) throw std::invalid_argument("columns must be contiguous");
    if (a.shape(0) > 1 && (a.strides(0) <= 0 || a.strides(0) % item != 0))
        throw std::invalid_argument("row stride must be a positive multiple of the item size");
    w.data = a.data();
    w.rows = a.shape(0);
    w.cols = a.shape(1);
    w.ld = a.shape(0) > 1 ? a.strides(0) / item : w.cols;
    return w;
}

/// One long-lived native thread that runs one job at a time.
class Worker {
  public:
    Worker() : thread_([this] { loop(); }) { thread_.detach(); }

    void start(std::function<void()> job) {
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = std::move(job);
        done_ = false;
        cv_.notify_all();
    }
    /// True once the job has finished; waits at most `timeout`.
    bool wait_for(std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return done_; });
    }

  private:
    void loop() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            cv_.wait(lock, [&] { return bool(job_); });
            auto job = std::move(job_);
            job_ = nullptr;
            lock.unlock();
            job();  // never throws: run_interruptible's job captures exceptions
            lock.lock();
            done_ = true;
            cv_.notify_all();
        }
    }
    std::mutex mutex_;
    std::condition_variable cv_;
    std::function<void()> job_;
    bool done_ = true;
    std::thread thread_;
};

/// Idle workers, reused across calls: OpenMP (libgomp) keeps one thread team per master
/// thread, so a fresh thread per call also re-created the team, and each call then waited
/// 4-12 ms for the new threads to be scheduled on a 2-vCPU VM (measured); reused workers keep
/// their teams. Workers are never destroyed (they sleep when idle); a forked child, which has
/// none of the parent's threads, starts an empty pool.
class WorkerPool {
  public:
    static WorkerPool& get() {
        static const bool registered = [] {
            pthread_atfork(nullptr, nullptr, [] { instance() = new WorkerPool; });  // leak the parent's
            return true;
        }();
        (void)registered;
        return *instance();
    }
    Worker* acquire() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (idle_.empty()) return new Worker;
        Worker* w = idle_.back();
        idle_.pop_back();
        return w;
    }
    void release(Worker* w) {
        std::lock_guard<std::mutex> lock(mutex_);
        idle_.push_back(w);
    }

  private:
    static WorkerPool*& instance() {
        static WorkerPool* pool = new WorkerPool;
        return pool;
    }
    std::mutex mutex_;
    std::vector<Worker*> idle_;
};

/// Runs work(cancel) on a pooled native thread while this (the calling, GIL-holding) thread
/// polls for signals every 50 ms; on Ctrl-C the cancel flag stops the batch between items (a
/// fit between candidates) and the KeyboardInterrupt is re-raised. The OpenMP team is the
/// worker's, never the caller's, so a process forked by the caller can run native work again.
template <class F>
auto run_interruptible(F&& work) -> decltype(work(static_cast<const std::atomic<bool>*>(nullptr))) {
    using Result = decltype(work(static_cast<const std::atomic<bool>*>(nullptr)));
    std::atomic<bool> cancel{false};
    std::optional<Result> result;
    std::exception_ptr error;
    std::unique_ptr<py::error_already_set> interrupt;
    {
        py::gil_scoped_release release;
        WorkerPool& pool = WorkerPool::get();
        Worker* worker = pool.acquire();
        worker->start([&] {
            try {
                result.emplace(work(&cancel));
            } catch (...) {
                error = std::current_exception();
            }
        });
        while (!worker->wait_for(std::chrono::milliseconds(50))) {
            if (interrupt) continue;
            py::gil_scoped_acquire acquire;
            if (PyErr_CheckSignals() != 0) {
                interrupt = std::make_unique<py::error_already_set>();
                cancel = true;
            }
        }
        pool.release(worker);
    }
    if (interrupt) throw *interrupt;
    if (error) std::rethrow_exception(error);
    return std::move(*result);
}

/// One MatrixView per array; an error names the matrix index.
std::vector<MatrixView> views_of(const std::vector<py::array>& arrays, const std::vector<std::string>& dtypes) {
    if (arrays.size() != dtypes.size()) throw std::invalid_argument("one dtype per array expected");
    std::vector<MatrixView> ws;
    for (size_t i = 0; i < arrays.size(); ++i) {
        try {
            ws.push_back(view_of(arrays[i], dtypes[i]));
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("matrix " + std::to_string(i) + ": " + e.what());
        }
    }
    return ws;
}

FitOptions fit_options(const std::string& ks, double xmin, double xmin_lo, double xmin_hi, double xmax, int64_t min_tail,
                       double floor, bool small_n, bool every_position, bool candidates, bool prune, int threads);

/// Options of an adaptive randomized spectrum: {"rtol", "margin", "fit": dict of fit_options' arguments}.
void adaptive_options(SpectrumOptions& o, const py::dict& adaptive) {
    if (adaptive.empty()) return;
    o.adaptive = true;
    o.rtol = adaptive["rtol"].cast<double>();
    o.margin = adaptive["margin"].cast<double>();
    const py::dict f = adaptive["fit"].cast<py::dict>();
    o.fit = fit_options(f["ks"].cast<std::string>(), f["xmin"].cast<double>(), f["xmin_lo"].cast<double>(),
                        f["xmin_hi"].cast<double>(), f["xmax"].cast<double>(), f["min_tail"].cast<int64_t>(),
                        f["floor"].cast<double>(), f["small_n"].cast<bool>(), f["every_position"].cast<bool>(), false,
                        f["prune"].cast<bool>(), 1);
}

SpectrumOptions spectrum_options(const std::string& method, const std::string& precision, bool normalize, int64_t k,
                                 int64_t oversample, int power_iters, uint64_t seed, const py::dict& adaptive) {
    SpectrumOptions o;
    adaptive_options(o, adaptive);
    o.method = parse_method(method);
    o.precision = parse_precision(precision);
    o.normalize = normalize;
    o.k = k;
    o.oversample = oversample;
    o.power_iters = power_iters;
    o.seed = seed;
    return o;
}

FitOptions fit_options(const std::string& ks, double xmin, double xmin_lo, double xmin_hi, double xmax, int64_t min_tail,
                       double floor, bool small_n, bool every_position, bool candidates, bool prune, int threads) {
    FitOptions o;
    o.ks = parse_ks(ks);
    o.xmin = xmin;
    o.xmin_lo = xmin_lo;
    o.xmin_hi = xmin_hi;
    o.xmax = xmax;
    o.min_tail = min_tail;
    o.floor = floor;
    o.small_n = small_n;
    o.every_position = every_position;
    o.candidates = candidates;
    o.prune = prune;
    o.threads = threads;
    return o;
}

py::array_t<double> to_numpy(const std::vector<double>& v) { return py::array_t<double>(py::ssize_t(v.size()), v.data()); }

using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "htsr native core: spectra of weight matrices and Clauset power-law fits";
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::overflow_error& e) {
            PyErr_SetString(PyExc_OverflowError, e.what());
        }
    });

    py::class_<Spectrum>(m, "Spectrum", "Eigenvalues of X = W^T W of one matrix (see htsr.spectrum).")
        .def(py::init([](std::vector<double> eigenvalues, double trace, int64_t N, int64_t M, bool complete,
                         std::vector<double> errors, int64_t k_computed) {
                 return Spectrum{std::move(eigenvalues), trace, N, M, complete, std::move(errors), k_computed};
             }),
             py::kw_only(), py::arg("eigenvalues"), py::arg("trace"), py::arg("N"), py::arg("M"), py::arg("complete"),
             py::arg("errors"), py::arg("k_computed"), "Built in Python by routes outside the native core (htsr.sparse)")
        .def_property_readonly("eigenvalues", [](const Spectrum& s) { return to_numpy(s.eigenvalues); },
                               "float64, ascending")
        .def_readonly("trace", &Spectrum::trace, "||W||_F^2 (/N when normalized): the sum of all M eigenvalues")
        .def_readonly("N", &Spectrum::N)
        .def_readonly("M", &Spectrum::M)
        .def_readonly("complete", &Spectrum::complete, "False when only the top k were computed")
        .def_property_readonly("errors", [](const Spectrum& s) { return to_numpy(s.errors); },
                               "randomized: bound on lambda_i - value_i >= 0 per value (same order); empty for exact routes")
        .def_readonly("k_computed", &Spectrum::k_computed, "randomized: k of the last sketch (M: adaptive ran the exact route)")
        .def("__repr__", [](const Spectrum& s) {
            return "Spectrum(N=" + std::to_string(s.N) + ", M=" + std::to_string(s.M) + ", values=" +
                   std::to_string(s.eigenvalues.size()) + (s.complete ? "" : ", top-k") + ")";
        });

    py::class_<FitResult>(m, "PowerLawFit", "Result of htsr.fit_power_law.")
        .def_readonly("alpha", &FitResult::alpha)
        .def_readonly("xmin", &FitResult::xmin)
        .def_readonly("xmax", &FitResult::xmax)
        .def_readonly("D", &FitResult::D)
        .def_readonly("sigma", &FitResult::sigma)
        .def_readonly("n_tail", &FitResult::n_tail)
        .def_readonly("n", &FitResult::n)
        .def_readonly("status", &FitResult::status)
        .def_readonly("message", &FitResult::message)
        .def_property_readonly("xmins", [](const FitResult& r) { return to_numpy(r.xmins); })
        .def_property_readonly("alphas", [](const FitResult& r) { return to_numpy(r.alphas); })
        .def_property_readonly("Ds", [](const FitResult& r) { return to_numpy(r.Ds); })
        .def_property_readonly("sigmas", [](const FitResult& r) { return to_numpy(r.sigmas); })
        .def_readonly("evaluations", &FitResult::evaluations, "KS points evaluated: the scan's work, independent of the machine")
        .def("to_dict", [](const FitResult& r) {
            py::dict d;
            d["alpha"] = r.alpha; d["xmin"] = r.xmin; d["xmax"] = r.xmax; d["D"] = r.D; d["sigma"] = r.sigma;
            d["n_tail"] = r.n_tail; d["n"] = r.n; d["status"] = r.status; d["message"] = r.message;
            return d;
        }, "The scalar fields as a dict.")
        .def("__repr__", [](const FitResult& r) {
            return "PowerLawFit(alpha=" + std::to_string(r.alpha) + ", xmin=" + std::to_string(r.xmin) + ", D=" +
                   std::to_string(r.D) + ", n_tail=" + std::to_string(r.n_tail) + ", status='" + r.status + "')";
        });

    m.def("spectrum",
          [](const py::array& a, const std::string& dtype, const std::string& method, const std::string& precision,
             bool normalize, int64_t k, int64_t oversample, int power_iters, uint64_t seed, int threads, const py::dict& adaptive) {
              const MatrixView w = view_of(a, dtype);
              const SpectrumOptions o = spectrum_options(method, precision, normalize, k, oversample, power_iters, seed, adaptive);
              py::gil_scoped_release release;
              lapack::BlasThreads blas(resolve_threads(threads, 1 << 30));
              return spectrum(w, o);
          },
          py::arg("a"), py::arg("dtype"), py::arg("method"), py::arg("precision"), py::arg("normalize"), py::arg("k"),
          py::arg("oversample"), py::arg("power_iters"), py::arg("seed"), py::arg("threads"), py::arg("adaptive") = py::dict());

    m.def("spectrum_batch",
          [](const std::vector<py::array>& arrays, const std::vector<std::string>& dtypes, const std::string& method,
             const std::string& precision, bool normalize, int64_t k, int64_t oversample, int power_iters, uint64_t seed,
             int threads, const py::dict& adaptive) {
              const std::vector<MatrixView> ws = views_of(arrays, dtypes);
              const SpectrumOptions o = spectrum_options(method, precision, normalize, k, oversample, power_iters, seed, adaptive);
              return run_interruptible([&](const std::atomic<bool>* cancel) { return spectrum_batch(ws, o, threads, cancel); });
          },
          py::arg("arrays"), py::arg("dtypes"), py::arg("method"), py::arg("precision"), py::arg("normalize"), py::arg("k"),
          py::arg("oversample"), py::arg("power_iters"), py::arg("seed"), py::arg("threads"), py::arg("adaptive") = py::dict());

    m.def("set_scratch_reuse", &set_scratch_reuse, py::arg("on"),
          "Keep the calling thread's freed Gram/conversion buffers for its next spectra (off: free them); see scratch.hpp.");
    m.def("scratch_bytes", &scratch_bytes, "Bytes of scratch blocks the calling thread holds for reuse.");

    m.def("fit_power_law",
          [](const Doubles& x, const std::string& ks, double xmin, double xmin_lo, double xmin_hi, double xmax,
             int64_t min_tail, double floor, bool small_n, bool every_position, bool candidates, bool prune, int threads) {
              if (x.ndim() != 1) throw std::invalid_argument("expected a 1-D array");
              const FitOptions o = fit_options(ks, xmin, xmin_lo, xmin_hi, xmax, min_tail, floor, small_n, every_position, candidates, prune, threads);
              return run_interruptible([&](const std::atomic<bool>* cancel) { return fit_power_law(x.data(), x.shape(0), o, cancel); });
          },
          py::arg("x"), py::arg("ks"), py::arg("xmin"), py::arg("xmin_lo"), py::arg("xmin_hi"), py::arg("xmax"),
          py::arg("min_tail"), py::arg("floor"), py::arg("small_n"), py::arg("every_position"), py::arg("candidates"), py::arg("prune"),
          py::arg("threads"));

    m.def("fit_power_law_batch",
          [](const std::vector<Doubles>& xs, const std::string& ks, double xmin, double xmin_lo, double xmin_hi,
             double xmax, int64_t min_tail, double floor, bool small_n, bool every_position, bool candidates, bool prune, int threads) {
              std::vector<std::pair<const double*, int64_t>> samples;
              for (size_t i = 0; i < xs.size(); ++i) {
                  if (xs[i].ndim() != 1) throw std::invalid_argument("sample " + std::to_string(i) + ": expected a 1-D array");
                  samples.emplace_back(xs[i].data(), xs[i].shape(0));
              }
              const FitOptions o = fit_options(ks, xmin, xmin_lo, xmin_hi, xmax, min_tail, floor, small_n, every_position, candidates, prune, 1);
              return run_interruptible(
                  [&](const std::atomic<bool>* cancel) { return fit_power_law_batch(samples, o, threads, cancel); });
          },
          py::arg("xs"), py::arg("ks"), py::arg("xmin"), py::arg("xmin_lo"), py::arg("xmin_hi"), py::arg("xmax"),
          py::arg("min_tail"), py::arg("floor"), py::arg("small_n"), py::arg("every_position"), py::arg("candidates"), py::arg("prune"),
          py::arg("threads"));

    // ---- diagnostics (htsr.diagnostics): shuffled spectra, bootstrap GOF, eigensystems
    m.def("shuffled_spectrum_batch",
          [](const std::vector<py::array>& arrays, const std::vector<std::string>& dtypes, const std::vector<uint64_t>& seeds,
             const std::string& method, const std::string& precision, int threads) {
              const std::vector<MatrixView> ws = views_of(arrays, dtypes);
              const SpectrumOptions o = spectrum_options(method, precision, false, 0, 0, 0, 0, py::dict());
              return run_interruptible(
                  [&](const std::atomic<bool>* cancel) { return shuffled_spectrum_batch(ws, o, seeds, threads, cancel); });
          },
          py::arg("arrays"), py::arg("dtypes"), py::arg("seeds"), py::arg("method"), py::arg("precision"), py::arg("threads"));

    m.def("shuffle_permutation", [](int64_t count, uint64_t seed) {
              std::vector<int64_t> p = shuffle_permutation(count, seed);
              return py::array_t<int64_t>(py::ssize_t(p.size()), p.data());
          }, py::arg("count"), py::arg("seed"));

    m.def("bootstrap_power_law",
          [](const Doubles& x, const std::string& ks, double xmin_lo, double xmin_hi, double xmax, int64_t min_tail,
             double floor, bool small_n, bool every_position, int64_t reps, uint64_t seed, bool fixed_xmin, int threads) {
              if (x.ndim() != 1) throw std::invalid_argument("expected a 1-D array");
              const FitOptions o = fit_options(ks, std::numeric_limits<double>::quiet_NaN(), xmin_lo, xmin_hi, xmax, min_tail,
                                               floor, small_n, every_position, false, true, 1);
              const double* data = x.data();
              const int64_t n = x.shape(0);
              BootstrapResult r = run_interruptible([&](const std::atomic<bool>* cancel) {
                  return bootstrap_power_law(data, n, o, reps, seed, fixed_xmin, threads, cancel);
              });
              py::dict d;
              d["fit"] = r.fit;
              d["p"] = r.p;
              d["reps"] = r.reps;
              d["valid"] = r.valid;
              d["Ds"] = to_numpy(r.Ds);
              return d;
          },
          py::arg("x"), py::arg("ks"), py::arg("xmin_lo"), py::arg("xmin_hi"), py::arg("xmax"), py::arg("min_tail"),
          py::arg("floor"), py::arg("small_n"), py::arg("every_position"), py::arg("reps"), py::arg("seed"),
          py::arg("fixed_xmin"), py::arg("threads"));

    m.def("gram_eigensystem_batch",
          [](const std::vector<py::array>& arrays, const std::vector<std::string>& dtypes, int threads) {
              const std::vector<MatrixView> ws = views_of(arrays, dtypes);
              std::vector<Eigensystem> es = run_interruptible(
                  [&](const std::atomic<bool>* cancel) { return gram_eigensystem_batch(ws, threads, cancel); });
              py::list out;
              for (auto& e : es) {
                  py::array_t<double> vec({py::ssize_t(e.M), py::ssize_t(e.M)},
                                          {py::ssize_t(sizeof(double)), py::ssize_t(e.M * sizeof(double))}, e.vectors.data());
                  out.append(py::make_tuple(to_numpy(e.values), vec, e.right));
              }
              return out;
          },
          py::arg("arrays"), py::arg("dtypes"), py::arg("threads"));

    m.def("orchestrate_on_cpu",
          [](const std::vector<py::array>& arrays, const std::vector<std::string>& dtypes, const std::string& precision,
             bool normalize) {
              std::vector<MatrixView> ws;
              for (size_t i = 0; i < arrays.size(); ++i) ws.push_back(view_of(arrays[i], dtypes.at(i)));
              const SpectrumOptions o = spectrum_options("gram", precision, normalize, 0, 10, 4, 0, py::dict());
              std::vector<std::string> solvers;
              std::vector<Spectrum> out;
              {
                  py::gil_scoped_release release;
                  out = orchestrate_on_cpu(ws, o, &solvers);
              }
              return py::make_tuple(out, solvers);
          },
          py::arg("arrays"), py::arg("dtypes"), py::arg("precision"), py::arg("normalize"),
          "The CUDA backend's orchestration with CPU kernels -> (spectra, solver per matrix); for tests.");

    m.def("build_info", [] {
        py::dict d;
        d["blas"] = std::string(scipy_openblas_get_config());
        d["blas_threads"] = lapack::blas_threads();
#ifdef _OPENMP
        d["openmp"] = true;
        d["max_threads"] = omp_get_max_threads();
#else
        d["openmp"] = false;
        d["max_threads"] = 1;
#endif
#ifdef HTSR_HAVE_CUDA
        d["cuda"] = true;
#else
        d["cuda"] = false;
#endif
        d["cuda_device_visible"] = cuda_available();
        return d;
    }, "How the native core was built: BLAS/LAPACK, OpenMP, CUDA.");
}
