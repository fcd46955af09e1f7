// pipelm: run GLM-4 models split by layers across threads, MPI ranks and TCP hosts.
// The only place that turns errors into exit codes.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/matmul.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session_net.h"
#include "launcher/signals.h"
#include "pipelm_version.h"  // generated at build time (scripts/cmake/PipelmVersion.cmake)
#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace {

const char* kUsage =
    "usage: pipelm <command> [flags]   (pipelm <command> --help for its flags)\n\n"
    "commands:\n"
    "  run         generate text (no -m: the embedded glm4-demo model over 2 stages)\n"
    "  logits      write the logits of every position of a token list (raw float32)\n"
    "  perplexity  perplexity (and KL divergence against a saved run) over a text file\n"
    "  bench       prompt/generation throughput, pipeline busy and bubble, roofline\n"
    "  simulate    predict bench's numbers for stages, links and sequences from a 1-stage calibration\n"
    "  plan        show how the layers are split into stages, without loading weights\n"
    "  tokenize    print the token ids of a text as JSON\n"
    "  inspect     print a GGUF file's metadata and tensor table\n"
    "  mkmodel     write a GLM-4 GGUF with random weights of any shape\n"
    "  quantize    rewrite a GGUF's weights in another type: IN OUT TYPE as llama-quantize (q4_k_m, q8_0, ...)\n"
    "  convert     write a Hugging Face folder (safetensors) as a GGUF, as llama.cpp's converter does\n"
    "  worker      serve pipeline stages over TCP for `run --workers`\n"
    "  serve       OpenAI-compatible HTTP server with continuous batching over the pipeline\n"
    "  chat        interactive chat in the terminal (multi-turn, streaming)\n\n"
    "modes: in-process (--stages N), MPI (mpirun -np N pipelm run ...), TCP (--workers h:p,...)\n"
    "pipelm --version: version, git commit, the CPU kernels this machine runs, CUDA, NCCL and MPI support\n"
    "exit codes: 0 ok, 2 bad flag, 3 malformed file, 4 unsupported, 5 I/O, 6 memory, 7 peer lost /\n"
    "  timeout / protocol, 8 non-finite activations, 9 device not available, 130 interrupted, 1 other\n";

int exit_code(pipelm::ErrorCode c) {
    switch (c) {
        case pipelm::ErrorCode::kInvalidArgument: return 2;
        case pipelm::ErrorCode::kFormat: return 3;
        case pipelm::ErrorCode::kUnsupported: return 4;
        case pipelm::ErrorCode::kIo: return 5;
        case pipelm::ErrorCode::kOutOfMemory: return 6;
        case pipelm::ErrorCode::kPeerLost:
        case pipelm::ErrorCode::kTimeout:
        case pipelm::ErrorCode::kProtocol: return 7;
        case pipelm::ErrorCode::kNumerics: return 8;
        case pipelm::ErrorCode::kNoDevice: return 9;
        case pipelm::ErrorCode::kCancelled: return 130;
        default: return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    pipelm::launcher::install_signal_handlers();
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    if (cmd == "--version" || cmd == "version") {
        // The version, the commit built (git describe at build time; "unknown" outside a git
        // checkout) and what this build and this CPU run: the CPU kernel level is chosen at run
        // time (the best the CPU has, or $PIPELM_CPU_ISA), every level giving the same bits.
        const std::string cuda = PIPELM_WITH_CUDA ? std::string("built, CUDA ") + PIPELM_CUDA_VERSION +
                                                        " (loaded by the first cuda stage)"
                                                  : std::string("not built");
#if defined(PIPELM_WITH_NCCL) && PIPELM_WITH_NCCL
        const char* nccl = "built";
#else
        const char* nccl = "not built";  // nothing is built against NCCL yet (scripts/cmake/PipelmDeps.cmake)
#endif
        std::printf("pipelm %s\ncommit: %s\ncpu kernels: %s\ncuda: %s\nnccl: %s\nmpi: %s\n", PIPELM_VERSION,
                    PIPELM_GIT_COMMIT, pipelm::kernels::cpu_isa_name(), cuda.c_str(), nccl,
                    PIPELM_WITH_MPI ? "built" : "not built");
        return 0;
    }
    try {
        using namespace pipelm::launcher;
        if (cmd == "run") return cmd_run(argc, argv);
        if (cmd == "logits") return cmd_logits(argc, argv);
        if (cmd == "perplexity") return cmd_perplexity(argc, argv);
        if (cmd == "bench") return cmd_bench(argc, argv);
        if (cmd == "simulate") return cmd_simulate(argc, argv);
        if (cmd == "plan") return cmd_plan(argc, argv);
        if (cmd == "tokenize") return cmd_tokenize(argc, argv);
        if (cmd == "inspect") return cmd_inspect(argc, argv);
        if (cmd == "mkmodel") return cmd_mkmodel(argc, argv);
        if (cmd == "quantize") return cmd_quantize(argc, argv);
        if (cmd == "convert") return cmd_convert(argc, argv);
        if (cmd == "worker") return cmd_worker(argc, argv);
        if (cmd == "serve") return cmd_serve(argc, argv);
        if (cmd == "chat") return cmd_chat(argc, argv);
        const std::string near = pipelm::cli::closest(cmd, {"run", "logits", "perplexity", "bench", "plan", "tokenize",
                                                            "inspect", "mkmodel", "quantize", "worker", "serve", "chat",
                                                            "convert"});
        std::fprintf(stderr, "pipelm: unknown command '%s'%s\n\n%s", cmd.c_str(),
                     near.empty() ? "" : (" (did you mean " + near + "?)").c_str(), kUsage);
        return 2;
    } catch (const pipelm::Error& e) {
        pipelm::launcher::net::report_error(e.what(), e.code());  // once, not per rank, under mpirun
        return exit_code(e.code());
    } catch (const std::bad_alloc&) {
        pipelm::log_line(pipelm::LogLevel::kError, "out of memory: use more stages, a smaller --ctx or a smaller model");
        return 6;
    } catch (const std::exception& e) {
        pipelm::log_line(pipelm::LogLevel::kError, e.what());
        return 1;
    }
}
