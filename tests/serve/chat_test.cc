// `pipelm chat` end to end: with stdin piped, the replies of a multi-turn conversation (with a
// /reset in it) are byte-identical to what `pipelm serve` answers for the same messages; Ctrl-C
// during a reply stops the reply and not the program.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "tests/serve/serve_util.h"

namespace pipelm::testing {
namespace {

const std::string kSystem = "You are a sailor.";

std::string chat_reply(httplib::Client& c, const json& messages) {
    auto r = post(c, "/v1/chat/completions",
                  json{{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}}.dump());
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
    if (!r || r->status != 200) return "";
    return json::parse(r->body)["choices"][0]["message"]["content"];
}

TEST(Chat, PipedConversationMatchesTheServer) {
    const std::string dir = make_temp_dir("pipelm-chat");
    Server s = start_server(ServeMode::kInProcess, dir, {});
    ASSERT_GT(s.port, 0) << s.proc.log();
    auto c = s.client();
    const json sys = {{"role", "system"}, {"content", kSystem}};
    const json u1 = {{"role", "user"}, {"content", "Call me Ishmael."}};
    const json u2 = {{"role", "user"}, {"content", "Where is the whale?"}};
    const std::string r1 = chat_reply(c, json::array({sys, u1}));
    const std::string r2 = chat_reply(c, json::array({sys, u1, {{"role", "assistant"}, {"content", r1}}, u2}));
    ASSERT_FALSE(r1.empty());
    ASSERT_FALSE(r2.empty());
    {
        std::ofstream in(dir + "/in.txt");
        in << "Call me Ishmael.\n/reset\n\nCall me Ishmael.\nWhere is the whale?\n";
    }
    const BoundedResult r = run_bounded(
        {"sh", "-c", "exec \"$0\" chat -m \"$1\" --stages 2 --threads 1 --temp 0 -n 12 --system \"$2\" < \"$3\" > \"$4\"",
         PIPELM_BINARY, kDemo, kSystem, dir + "/in.txt", dir + "/out.txt"},
        dir + "/chat.log", Ms(60000));
    ASSERT_FALSE(r.timed_out) << r.output;
    EXPECT_EQ(r.status, 0) << r.output;
    // One line per reply: the first turn, again after /reset, then the second turn.
    EXPECT_EQ(slurp(dir + "/out.txt"), r1 + "\n" + r1 + "\n" + r2 + "\n") << r.output;
}

TEST(Chat, CtrlCStopsTheReplyNotTheProgram) {
    const std::string dir = make_temp_dir("pipelm-chat");
    const std::string fifo = dir + "/in.fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    Process p = Process::spawn({"sh", "-c",
                                "exec \"$0\" chat -m \"$1\" --stages 2 --threads 1 --ctx 4096 -n 4000 --ignore-eos < \"$2\" > \"$3\"",
                                PIPELM_BINARY, kDemo, fifo, dir + "/out.txt"},
                               dir + "/chat.log");
    ASSERT_TRUE(p.started());
    std::ofstream in(fifo);  // opens once the chat has its end open
    in << "Tell me about the whale.\n" << std::flush;
    // Wait until the reply is under way, then Ctrl-C.
    const auto t0 = Clock::now();
    while (slurp(dir + "/out.txt").size() < 40 && seconds_since(t0) < 30) std::this_thread::sleep_for(Ms(10));
    ASSERT_GE(slurp(dir + "/out.txt").size(), 40u) << p.log();
    ASSERT_TRUE(p.signal(SIGINT));
    EXPECT_TRUE(p.wait_for_text("[stopped]", Ms(10000))) << p.log();
    EXPECT_TRUE(p.running()) << "chat exited on Ctrl-C:\n" << p.log();
    // It goes on reading its input: /exit ends it with 0.
    in << "/exit\n" << std::flush;
    in.close();
    const auto st = p.wait_for(Ms(20000));
    ASSERT_TRUE(st.has_value()) << p.log();
    EXPECT_EQ(*st, 0) << p.log();
    EXPECT_LT(slurp(dir + "/out.txt").size(), 3000u) << "the reply did not stop";
}

}  // namespace
}  // namespace pipelm::testing
