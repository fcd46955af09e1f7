// Ctrl-C handling: the first SIGINT/SIGTERM asks the current command to stop at the next safe
// point (between tokens / ubatches) and shut the pipeline down cleanly; a second one exits at once.
#pragma once

namespace pipelm::launcher {

void install_signal_handlers();
bool interrupted();
// Forgets the signals so far (`pipelm chat`: Ctrl-C stopped a reply and the program goes on, so
// the next Ctrl-C again stops a reply instead of exiting at once).
void clear_interrupt();

}  // namespace pipelm::launcher
