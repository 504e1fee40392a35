// `ferry chat`: each line of standard input is a user turn rendered with the model's chat
// template; each answer equals `ferry run` on the rendered conversation.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "ferry/models/chat_template.h"
#include "ferry/models/tokenizer.h"
#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using testing::run_ferry;
using testing::run_ferry_redirected;
using testing::run_ferry_stdout;

constexpr const char* kTemplate =
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}";

class ChatCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto made = run_ferry("make-model --arch llama --seed 3 --out " + model());
    ASSERT_EQ(made.exit_code, 0) << made.out;
  }
  std::string model() const { return (dir_.path() / "tiny").string(); }

  void add_template() const {
    const std::string file = model() + "/tokenizer_config.json";
    nlohmann::json config = nlohmann::json::object();
    if (std::ifstream in(file); in) config = nlohmann::json::parse(in);
    config["chat_template"] = kTemplate;
    config["eos_token"] = "</s>";
    std::ofstream(file) << config.dump();
  }

  // `ferry run` on the conversation rendered as ferry chat renders it: the answer's text.
  std::string answer_alone(const std::vector<models::ChatMessage>& messages) const {
    const models::Tokenizer tok = models::Tokenizer::load(model());
    const std::string text =
        models::apply_chat_template(models::ChatTemplate::parse(kTemplate, "test"), messages,
                                    {.add_generation_prompt = true, .eos_token = "</s>"});
    std::string ids;
    for (std::int64_t id : tok.encode(text, false))
      ids += (ids.empty() ? "" : ",") + std::to_string(id);
    const auto r =
        run_ferry_stdout("run " + model() + " --prompt-ids " + ids + " -n 5 --ignore-eos --json");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    // The bytes as decoded (--json replaces invalid UTF-8 of random weights; chat prints bytes).
    return tok.decode(nlohmann::json::parse(r.out)["token_ids"].get<std::vector<std::int64_t>>(),
                      true);
  }

  // `ferry chat` with `input` on standard input: stdout.
  std::string chat(const std::string& input) const {
    std::ofstream(dir_.path() / "input.txt") << input;
    const auto r = run_ferry_redirected(
        "chat " + model() + " -n 5 --ignore-eos --no-progress",
        ("< " + (dir_.path() / "input.txt").string() + " 2>/dev/null").c_str());
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.out;
  }

  ferry::testing::ScratchDir dir_;
};

TEST_F(ChatCommand, EachTurnEqualsRunOnTheRenderedConversation) {
  add_template();
  const std::string first = answer_alone({{"user", "Hello"}});
  const std::string second =
      answer_alone({{"user", "Hello"}, {"assistant", first}, {"user", "Tell me more"}});
  EXPECT_EQ(chat("Hello\n"), first + "\n");
  EXPECT_EQ(chat("Hello\nTell me more\n"), first + "\n" + second + "\n");
  // /reset forgets the conversation; empty lines are skipped; /exit ends the session.
  EXPECT_EQ(chat("Hello\n/reset\n\nHello\n/exit\nTell me more\n"), first + "\n" + first + "\n");
}

TEST_F(ChatCommand, AModelWithoutATemplateIsRefusedBeforeLoading) {
  const auto r = run_ferry("chat " + model() + " < /dev/null");
  EXPECT_EQ(r.exit_code, 1) << r.out;  // bad input
  EXPECT_NE(r.out.find("has no chat template"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("loading"), std::string::npos) << r.out;
}

TEST_F(ChatCommand, AsOneRankOfSeveralItIsRefusedNamingServe) {
  const auto r =
      run_ferry_redirected("chat " + model() + " < /dev/null", "2>&1",
                           "env MASTER_ADDR=127.0.0.1 MASTER_PORT=1 WORLD_SIZE=2 RANK=1 ");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("ferry launch --nproc N -- serve"), std::string::npos) << r.out;
}

TEST_F(ChatCommand, AnUnsupportedTemplateNamesTheConstruct) {
  const std::string file = model() + "/tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  if (std::ifstream in(file); in) config = nlohmann::json::parse(in);
  config["chat_template"] = "{% macro m() %}x{% endmacro %}{{ m() }}";
  std::ofstream(file) << config.dump();
  const auto r = run_ferry("chat " + model() + " < /dev/null");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("macro"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ferry::cli
