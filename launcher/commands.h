// pipelm sub-commands. Each returns the process exit code; errors are thrown as pipelm::Error
// and mapped to exit codes in main.cc.
#pragma once
#include <string>

namespace pipelm::launcher {

int cmd_run(int argc, char** argv);
int cmd_logits(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_mkmodel(int argc, char** argv);
int cmd_plan(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_simulate(int argc, char** argv);
int cmd_worker(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_chat(int argc, char** argv);

// Path of the embedded demo model, written to the cache directory on first use.
std::string default_model_path();

}  // namespace pipelm::launcher
