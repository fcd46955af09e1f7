// The GLM-4-0414 chat template (the official Jinja template without tools), rendered directly.
#include "runtime/base/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace pipelm::tok {

std::string apply_chat_template(const std::vector<ChatMessage>& msgs, bool add_generation_prompt) {
    size_t bytes = 32;
    for (size_t i = 0; i < msgs.size(); ++i) {
        const std::string& r = msgs[i].role;
        if (r != "system" && r != "user" && r != "assistant" && r != "observation") {
            PIPELM_THROW(ErrorCode::kInvalidArgument, "chat message ", i, " has role '", r,
                         "'; the GLM-4 chat template knows only 'system', 'user', 'assistant' and "
                         "'observation' (send tool results as 'observation')");
        }
        bytes += r.size() + msgs[i].content.size() + 8;
    }
    std::string out;
    out.reserve(bytes);
    out += "[gMASK]<sop>";
    // The official template first emits every system message, then the others in order.
    for (const ChatMessage& m : msgs) {
        if (m.role == "system") out.append("<|system|>\n").append(m.content);
    }
    for (const ChatMessage& m : msgs) {
        if (m.role != "system") out.append("<|").append(m.role).append("|>\n").append(m.content);
    }
    if (add_generation_prompt) out += "<|assistant|>";
    return out;
}

}  // namespace pipelm::tok
