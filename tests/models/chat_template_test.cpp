// Chat templates: templates written here in the style of the ones models ship (ChatML/Qwen,
// Llama 3, Llama 2/Mistral, tool calls), each rendered to an exact string; then Jinja's
// constructs one by one, whitespace control, and every error.
#include "ferry/models/chat_template.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ferry/core/error.h"

namespace ferry::models {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};

std::string render(std::string_view source, std::string_view variables = "{}") {
  return ChatTemplate::parse(source, "test.jinja").render(variables);
}

// The message of the E that `f` throws; fails the test when it throws nothing or another type.
template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "threw nothing";
  return "";
}

// --- Templates in the style of real ones.

TEST(ChatTemplate, ChatMlRendersEachTurnAndTheGenerationPrompt) {
  const auto t = ChatTemplate::parse(
      "{% for message in messages %}"
      "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
      "{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
      "chatml");
  EXPECT_EQ(apply_chat_template(t, kConversation),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template(t, {{"user", "Hi"}}, {.add_generation_prompt = false}),
            "<|im_start|>user\nHi<|im_end|>\n");
}

// Block tags on lines of their own, indented: trim_blocks and lstrip_blocks leave no trace of
// them, while the indent and newline around {{ content }} stay.
constexpr std::string_view kLlama3 = R"({{ bos_token }}
{% for message in messages %}
    {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}
    {{ content }}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{% endif %}
)";

TEST(ChatTemplate, Llama3StyleWithBosAndHeaderIds) {
  const auto t = ChatTemplate::parse(kLlama3, "llama3");
  EXPECT_EQ(apply_chat_template(t, {{"user", "  Hi there \n"}}, {.bos_token = "<|begin_of_text|>"}),
            "<|begin_of_text|>\n"
            "    <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\n"
            "    <|start_header_id|>assistant<|end_header_id|>\n\n\n");
}

constexpr std::string_view kLlama2 =
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}";

TEST(ChatTemplate, Llama2StyleFoldsTheSystemMessageIntoTheFirstTurn) {
  const auto t = ChatTemplate::parse(kLlama2, "llama2");
  EXPECT_EQ(
      apply_chat_template(t, kConversation, {.bos_token = "<s>", .eos_token = "</s>"}),
      "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]");
}

TEST(ChatTemplate, Llama2StyleRaisesOnRolesThatDoNotAlternate) {
  const auto t = ChatTemplate::parse(kLlama2, "tokenizer_config.json: chat_template");
  const std::string message = error_of<InvalidArgument>([&] {
    apply_chat_template(t, {{"user", "a"}, {"user", "b"}});
  });
  EXPECT_EQ(message,
            "tokenizer_config.json: chat_template at 1:314: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
}

// Namespaces carry values out of loops; loop variables; tojson; trim.
constexpr std::string_view kSummary = R"({%- set ns = namespace(users=0, last_user='') -%}
{%- for m in messages -%}
  {%- if m.role == 'user' -%}
    {%- set ns.users = ns.users + 1 -%}
    {%- set ns.last_user = m.content | trim -%}
  {%- endif -%}
  {{ loop.index }}/{{ loop.length }}{{ ':first' if loop.first }}{{ ':last' if loop.last }} {{ m.role }}
{% endfor -%}
users={{ ns.users }} last={{ ns.last_user | tojson }} roles={{ messages | map(attribute='role') | list | tojson }})";

TEST(ChatTemplate, NamespaceLoopVariablesAndTojson) {
  const auto t = ChatTemplate::parse(kSummary, "summary");
  EXPECT_EQ(apply_chat_template(t, {{"system", "s"}, {"user", " Hi \"you\" "}, {"assistant", "a"}}),
            "1/3:first system\n2/3 user\n3/3:last assistant\n"
            "users=1 last=\"Hi \\\"you\\\"\" roles=[\"system\", \"user\", \"assistant\"]");
}

constexpr std::string_view kToolCalls = R"({%- for message in messages %}
    {%- if message.role == 'assistant' and message.tool_calls %}
        {%- for call in message.tool_calls %}
            {{- '<tool_call>' ~ {'name': call.function.name, 'arguments': call.function.arguments} | tojson ~ '</tool_call>' }}
        {%- endfor %}
    {%- else %}
        {{- '[' ~ message.role ~ '] ' ~ message.content }}
    {%- endif %}
{%- endfor %})";

TEST(ChatTemplate, ToolCallsGivenAsJsonKeepTheirKeyOrder) {
  const std::string variables = R"({"messages": [
      {"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "tool_calls": [
          {"function": {"name": "weather", "arguments": {"zip": "75001", "city": "Paris"}}}]}]})";
  EXPECT_EQ(render(kToolCalls, variables),
            "[user] Weather?<tool_call>{\"name\": \"weather\", \"arguments\": "
            "{\"zip\": \"75001\", \"city\": \"Paris\"}}</tool_call>");
}

TEST(ChatTemplate, EmptyConversationAndUnicodeContent) {
  const auto t = ChatTemplate::parse(
      "{% for m in messages %}{{ m.content }}|{{ m.content | length }}|{{ m.content[1:] }}|"
      "{{ m.content | tojson }}|{{ m.content | tojson(ensure_ascii=true) }}{% else %}none{% endfor "
      "%}",
      "unicode");
  EXPECT_EQ(apply_chat_template(t, {}), "none");
  EXPECT_EQ(apply_chat_template(t, {{"user", "caf\xC3\xA9 \xF0\x9F\x98\x80"}}),
            "caf\xC3\xA9 \xF0\x9F\x98\x80|6|af\xC3\xA9 \xF0\x9F\x98\x80|"
            "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"|\"caf\\u00e9 \\ud83d\\ude00\"");
}

TEST(ChatTemplate, InvalidUtf8InAMessageIsReplaced) {
  const auto t = ChatTemplate::parse("{{ messages[0].content }}", "t");
  EXPECT_EQ(apply_chat_template(t, {{"user", "a\xFF"}}), "a\xEF\xBF\xBD");
}

// --- Whitespace.

TEST(ChatTemplateWhitespace, MinusStripsEverySpaceAndNewlineOnItsSide) {
  EXPECT_EQ(render("a  \n {{- 1 -}} \n  b"), "a1b");
  EXPECT_EQ(render("a \n{%- if true -%}\n x \n{%- endif -%}\n b"),
            "ax"
            "b");
  EXPECT_EQ(render("a {#- note -#} b"), "ab");
}

TEST(ChatTemplateWhitespace, TrimBlocksDropsOneNewlineAfterABlockTag) {
  EXPECT_EQ(render("{% if true %}\nx\n{% endif %}\ny"), "x\ny");
  EXPECT_EQ(render("{% if true %}\n\nx{% endif %}"), "\nx");  // only one
  EXPECT_EQ(render("{{ 'v' }}\nx"), "v\nx");                  // not after {{ }}
  EXPECT_EQ(render("{# c #}\nx"), "x");                       // comments too
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}"), "\nx");   // '+' keeps it
}

TEST(ChatTemplateWhitespace, LstripBlocksDropsIndentBeforeABlockTagOnly) {
  EXPECT_EQ(render("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(render("a\n\t {% if true %}x{% endif %}"), "a\nx");
  EXPECT_EQ(render("a {% if true %}x{% endif %}"), "a x");   // not at a line start
  EXPECT_EQ(render("  {{ 'v' }}"), "  v");                   // not before {{ }}
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");  // '+' keeps it
}

TEST(ChatTemplateWhitespace, OneTrailingNewlineIsDroppedAndLineEndingsBecomeLf) {
  EXPECT_EQ(render("a\r\nb\rc\n"), "a\nb\nc");
  EXPECT_EQ(render("a\n\n"), "a\n");
}

// --- Statements.

TEST(ChatTemplateStatements, ForLoopVariablesElseFilterBreakContinue) {
  EXPECT_EQ(
      render("{% for x in [10, 20, 30] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
             "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}"),
      "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] if x != 2 %}{{ x }}/{{ loop.length }} {% endfor %}"),
            "1/3 3/3 4/3 ");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}"
                   "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(render("{% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}={{ v }} {% endfor %}"),
            "b=1 a=2 ");
  EXPECT_EQ(
      render("{% for x in [1, 2] %}{{ loop.previtem }}>{{ x }}>{{ loop.nextitem }} {% endfor %}"),
      ">1>2 1>2> ");
}

TEST(ChatTemplateStatements, SetInsideALoopDoesNotLeaveIt) {
  EXPECT_EQ(render("{% set n = 0 %}{% for i in [1, 2, 3] %}{% set n = n + 1 %}{{ n }}{% endfor %}"
                   "{{ n }}"),
            "1110");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
                   "{% endfor %}{{ ns.n }}"),
            "6");
}

TEST(ChatTemplateStatements, SetForms) {
  EXPECT_EQ(render("{% set a, b = [1, 2] %}{% set c, d = 3, 4 %}{{ a }}{{ b }}{{ c }}{{ d }}"),
            "1234");
  EXPECT_EQ(render("{% set x %}in {{ 1 + 1 }}{% endset %}[{{ x }}]"), "[in 2]");
  EXPECT_EQ(render("{% if false %}a{% elif 0 %}b{% elif 'x' %}c{% else %}d{% endif %}"), "c");
}

TEST(ChatTemplateStatements, GenerationBlockRendersItsBody) {
  EXPECT_EQ(render("a{% generation %}b{% endgeneration %}c"), "abc");
}

// --- Expressions.

TEST(ChatTemplateExpressions, LiteralsAndTheirPythonText) {
  EXPECT_EQ(render(R"({{ 'it\'s' }} {{ "say \"hi\"" }} {{ "\u00e9\x41\t|" }} {{ 'a' "b" }})"),
            "it's say \"hi\" \xC3\xA9"
            "A\t| ab");
  EXPECT_EQ(
      render("{{ none }} {{ True }} {{ false }} {{ 1_000 }} {{ 2.50 }} {{ 1e20 }} {{ 1e-5 }}"),
      "None True False 1000 2.5 1e+20 1e-05");
  EXPECT_EQ(render(R"({{ [1, 'a', none, true, 1.0, {'k': "it's\n"}] }} {{ (1, 2) }})"),
            R"([1, 'a', None, True, 1.0, {'k': "it's\n"}] [1, 2])");
}

TEST(ChatTemplateExpressions, Arithmetic) {
  EXPECT_EQ(
      render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} "
             "{{ 10 - 3 * 2 }} {{ (10 - 3) * 2 }} {{ 'ab' * 2 }} {{ [0] * 2 }} {{ -(1 + 2) }}"),
      "3 -4 2 3.5 2.0 1024 4 14 abab [0, 0] -3");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true ~ nothing }} {{ [1] + [2] }} {{ 'x' + 'y' }}"),
            "a1NoneTrue [1, 2] xy");
}

TEST(ChatTemplateExpressions, ComparisonsLogicAndMembership) {
  EXPECT_EQ(
      render(
          "{{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1, 2] < [1, 3] }}"),
      "True False True True True");
  EXPECT_EQ(
      render("{{ 'at' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'cat' }}"),
      "True True True True");
  EXPECT_EQ(render("{{ true and 'x' }} {{ 0 or 'y' }} {{ not none }} {{ not x is defined }}"),
            "x y True True");
  EXPECT_EQ(
      render("{{ 'a' if 0 else 'b' }} {{ 'a' if 0 }}| {{ 1 if false else 2 if false else 3 }}"),
      "b | 3");
}

TEST(ChatTemplateExpressions, AttributesSubscriptsAndSlices) {
  const std::string vars = R"({"m": {"role": "user", "parts": [1, 2, 3, 4, 5]}})";
  EXPECT_EQ(
      render("{{ m.role }} {{ m['role'] }} {{ m.parts[0] }} {{ m.parts[-1] }} {{ m.parts.1 }} "
             "{{ m.parts[1:] }} {{ m.parts[::-1] }} {{ m.parts[4:1:-2] }} {{ 'hello'[1:-1] }}",
             vars),
      "user user 1 5 2 [2, 3, 4, 5] [5, 4, 3, 2, 1] [5, 3] ell");
  EXPECT_EQ(render("[{{ m.missing }}{{ m.parts[9] }}{{ m.missing.deeper }}]", vars), "[]");
}

TEST(ChatTemplateExpressions, Tests) {
  EXPECT_EQ(
      render("{{ x is defined }} {{ x is not defined }} {{ x is undefined }} {{ none is none }} "
             "{{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ x is iterable }} "
             "{{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is true }} "
             "{{ 0 is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} "
             "{{ 'a' is equalto('a') }} {{ 2 is in [1, 2] }} {{ 'ab' is lower }}"),
      "False True True True True True True True True True True True False True True True "
      "True True True");
}

TEST(ChatTemplateExpressions, StringMethods) {
  EXPECT_EQ(
      render("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|"
             "{{ 'a\\n'.rstrip() }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|"
             "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}|"
             "{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}{{ 'hello wORLD'.title() }}|"
             "{{ 'aXbX'.replace('X', '-') }}|{{ ', '.join(['a', 'b']) }}"),
      "a b|a|a|a|TrueTrue|['a', 'b', '', 'c']['a', 'b']['a', 'b c']|ABabHello World|a-b-|a, b");
}

TEST(ChatTemplateExpressions, DictMethods) {
  EXPECT_EQ(render("{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.keys() | list }} "
                   "{{ d.values() | list }} {{ d.items() | list }}",
                   R"({"d": {"a": 1, "b": [2]}})"),
            "1 None 5 ['a', 'b'] [1, [2]] [['a', 1], ['b', [2]]]");
}

TEST(ChatTemplateExpressions, Filters) {
  EXPECT_EQ(
      render("{{ ' hi '|trim }}|{{ 'Hi'|upper }}{{ 'Hi'|lower }}|{{ 'hello WORLD'|capitalize }}|"
             "{{ 'hello world-x'|title }}|{{ [3, 1]|first }}{{ [3, 1]|last }}|"
             "{{ 'héllo'|length }}{{ [1, 2]|count }}|{{ x|default('d') }}{{ ''|default('d') }}"
             "{{ ''|default('d', true) }}{{ x|d('e') }}|{{ 5|string ~ 1 }}|{{ '42'|int + 1 }}"
             "{{ 'x'|int }}{{ 3.9|int }}{{ '2.5'|float }}|{{ 'ab'|list }}|"
             "{{ 'a-b'|replace('-', '+') }}|{{ [1, 2]|reverse|list }}|{{ -3|abs }}"),
      "hi|HIhi|Hello world|Hello World-X|31|52|dde|51|43032.5|['a', 'b']|a+b|[2, 1]|3");
  EXPECT_EQ(render("{{ ['a', 'b']|join }} {{ [1, 2]|join('-') }} {{ [{'n': 'x'}, {'n': "
                   "'y'}]|join(', ', attribute='n') }}"),
            "ab 1-2 x, y");
  EXPECT_EQ(render("{{ [0, 1, '', 'x']|select|list }} {{ [1, 2, 3]|reject('odd')|list }} "
                   "{{ ['a', 'b']|map('upper')|list }} {{ [{'a': 1}, {}]|map(attribute='a', "
                   "default=0)|list }}"),
            "[1, 'x'] [2] ['A', 'B'] [1, 0]");
}

TEST(ChatTemplateExpressions, SelectattrAndRejectattr) {
  const std::string vars = R"({"messages": [{"role": "system", "content": "s"},
      {"role": "user", "content": "u1"}, {"role": "user", "content": "u2"}]})";
  EXPECT_EQ(
      render(
          "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }} "
          "{{ messages|rejectattr('role', 'equalto', 'user')|list|length }} "
          "{{ messages|selectattr('missing')|list }}",
          vars),
      "u1,u2 1 []");
}

TEST(ChatTemplateExpressions, Tojson) {
  EXPECT_EQ(render("{{ {'b': 1, 'a': [1, 2.5, none, true]}|tojson }}"),
            R"({"b": 1, "a": [1, 2.5, null, true]})");
  EXPECT_EQ(render("{{ {'b': 1, 'a': []}|tojson(indent=2, sort_keys=true) }}"),
            "{\n  \"a\": [],\n  \"b\": 1\n}");
  EXPECT_EQ(render("{{ [1, 'x']|tojson(separators=(',', ':')) }}"), R"([1,"x"])");
  EXPECT_EQ(render("{{ '<\\t>'|tojson }}"), R"("<\t>")");
}

TEST(ChatTemplateExpressions, RangeAndNamespaceAndDict) {
  EXPECT_EQ(render("{% for i in range(3) %}{{ i }}{% endfor %} {{ range(1, 7, 2)|list }} "
                   "{{ range(3, 0, -1)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }}"),
            "012 [1, 3, 5] [3, 2, 1] {'a': 1, 'b': 'x'} 1");
  EXPECT_FALSE(render("{{ strftime_now('%Y') }}").empty());
}

TEST(ChatTemplateExpressions, UndefinedRendersEmptyAndIsFalsy) {
  EXPECT_EQ(render("[{{ nothing }}{{ nothing.attr }}{{ nothing|trim }}{{ nothing|length }}]"
                   "{% if nothing %}yes{% else %}no{% endif %}{% for x in nothing %}x{% endfor %}"),
            "[0]no");
}

TEST(ChatTemplate, CopiesShareTheParsedTemplate) {
  const auto original = ChatTemplate::parse("{{ x }}", "shared");
  const ChatTemplate copy = original;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(copy.render(R"({"x": 7})"), "7");
  EXPECT_EQ(copy.origin(), "shared");
}

// --- Errors.

TEST(ChatTemplateErrors, UnsupportedConstructsAreNamedWithTheirPosition) {
  EXPECT_EQ(error_of<Unsupported>([] { render("ok\n  {% macro greet(x) %}hi{% endmacro %}"); }),
            "test.jinja at 2:3: unsupported tag '{% macro %}'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{% include 'other.jinja' %}"); }),
            "test.jinja at 1:1: unsupported tag '{% include %}'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{{ x | escape }}"); }),
            "test.jinja at 1:8: unsupported filter 'escape'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{{ x is callable }}"); }),
            "test.jinja at 1:9: unsupported test 'callable'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{{ cycler(1, 2) }}"); }),
            "test.jinja at 1:4: unsupported function 'cycler'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{{ lookup(1) }}"); }),
            "test.jinja at 1:4: unknown function 'lookup'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{{ s.casefold() }}"); }),
            "test.jinja at 1:6: unknown method 'casefold'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{% for x in y recursive %}{% endfor %}"); }),
            "test.jinja at 1:15: recursive loops are not supported");
}

TEST(ChatTemplateErrors, SyntaxErrorsHaveLineAndColumn) {
  EXPECT_EQ(error_of<CorruptFile>([] { render("a\n{{ 1 + }}"); }),
            "test.jinja at 2:8: expected an expression, found '}}'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("\xC3\xA9\xC3\xA9 {{ 'open }}"); }),
            "test.jinja at 1:7: string is never closed");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{% if x %}\nno end"); }),
            "test.jinja at 1:1: '{% if %}' is never closed: expected '{% endif %}'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{% for x in y %}{% endif %}"); }),
            "test.jinja at 1:17: unexpected '{% endif %}' in '{% for %}' opened at 1:1");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{% endfor %}"); }),
            "test.jinja at 1:1: '{% endfor %}' without an open tag");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{% break %}"); }),
            "test.jinja at 1:1: '{% break %}' outside a for loop");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{{ x "); }),
            "test.jinja at 1:1: tag '{{' is never closed with '}}'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{# note"); }),
            "test.jinja at 1:1: comment '{#' is never closed with '#}'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{{ x ! y }}"); }),
            "test.jinja at 1:6: unexpected character '!'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{{ }}"); }), "test.jinja at 1:4: empty '{{ }}'");
  EXPECT_EQ(error_of<Unsupported>([] { render("{% bogus %}"); }),
            "test.jinja at 1:1: unknown tag '{% bogus %}'");
}

TEST(ChatTemplateErrors, WrongArgumentsToABuiltinAreParseErrors) {
  EXPECT_EQ(error_of<CorruptFile>([] { render("{{ 'a'|replace('x') }}"); }),
            "test.jinja at 1:15: filter 'replace' needs argument 'new'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{{ x|tojson(indent=2, width=3) }}"); }),
            "test.jinja at 1:12: filter 'tojson' has no parameter 'width'");
  EXPECT_EQ(error_of<CorruptFile>([] { render("{{ range() }}"); }),
            "test.jinja at 1:9: function 'range' needs argument 'start'");
}

TEST(ChatTemplateErrors, RaiseExceptionCarriesTheTemplatesMessage) {
  const std::string message = error_of<InvalidArgument>([] {
    render("{% if true %}\n  {{ raise_exception('No system role, please') }}{% endif %}");
  });
  EXPECT_EQ(message, "test.jinja at 2:6: No system role, please");
}

TEST(ChatTemplateErrors, TypeErrorsAtRenderTimeNameTheExpression) {
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ messages[0].missing + 1 }}"); }),
            "test.jinja at 1:4: 'messages[0].missing' is undefined");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ 'a' + 1 }}"); }),
            "test.jinja at 1:4: unsupported operand types for +: 'string' and 'int'");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ 1 // 0 }}"); }),
            "test.jinja at 1:4: integer division or modulo by zero");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ nothing.strip() }}"); }),
            "test.jinja at 1:4: 'nothing' is undefined");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ [1].strip() }}"); }),
            "test.jinja at 1:4: 'list' has no method 'strip'");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{% set x = 1 %}{% set x.a = 2 %}"); }),
            "test.jinja at 1:16: cannot set 'x.a': 'x' is not a namespace (its type is int)");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ undefined_value|tojson }}"); }),
            "test.jinja at 1:4: tojson of an undefined value");
  EXPECT_EQ(error_of<InvalidArgument>([] { render("{{ '%s' % 1 }}"); }),
            "test.jinja at 1:4: string formatting with '%' is not supported; use '~' or '+'");
}

TEST(ChatTemplateErrors, VariablesMustBeAJsonObject) {
  const auto t = ChatTemplate::parse("x", "t");
  EXPECT_EQ(error_of<InvalidArgument>([&] { t.render("[1]"); }),
            "t: the variables to render with must be a JSON object");
  EXPECT_EQ(error_of<InvalidArgument>([&] { t.render("{bad json"); }),
            "t: the variables to render with must be a JSON object");
}

TEST(ChatTemplateLimits, RunawayOutputStops) {
  const std::string message = error_of<InvalidArgument>(
      [] { render("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"); });
  EXPECT_NE(message.find("the output passed 64 MiB"), std::string::npos) << message;
  EXPECT_NE(
      error_of<InvalidArgument>([] { render("{{ 'x' * 100000000 }}"); }).find("longer than 64 MiB"),
      std::string::npos);
}

TEST(ChatTemplateLimits, RunawayLoopsStop) {
  const std::string message = error_of<InvalidArgument>([] {
    render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  });
  EXPECT_NE(message.find("more than 10000000 steps"), std::string::npos) << message;
  EXPECT_NE(
      error_of<InvalidArgument>([] { render("{{ range(1000000) }}"); }).find("more than 100000"),
      std::string::npos);
}

TEST(ChatTemplateLimits, HugeCountsOnEmptyOrShortSequencesEndAtOnce) {
  EXPECT_EQ(render("{{ '' * 1000000000000 }}|{{ [] * 1000000000000 }}|{{ [1, 2, "
                   "3][::9223372036854775807] }}|"
                   "{{ range(9223372036854775800, 9223372036854775807, 5)|list }}"),
            "|[]|[1]|[9223372036854775800, 9223372036854775805]");
}

TEST(ChatTemplateLimits, IndentedJsonStopsAtTheOutputLimitAsItGrows) {
  const std::string message = error_of<InvalidArgument>([] {
    render(
        "{% set ns = namespace(x=range(40000)|list) %}{% for i in range(200) %}"
        "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|tojson(indent=64) }}");
  });
  EXPECT_NE(message.find("tojson: the text passed 64 MiB"), std::string::npos) << message;
}

TEST(ChatTemplateLimits, DeepNestingIsRefusedNotOverflowed) {
  const std::string parens = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(error_of<Unsupported>([&] { render("{{ " + parens + " }}"); }).find("nested more than"),
            std::string::npos);
  std::string sum = "1";
  for (int i = 0; i < 5000; ++i) sum += " + 1";
  EXPECT_NE(error_of<Unsupported>([&] { render("{{ " + sum + " }}"); }).find("nested more than"),
            std::string::npos);
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of<Unsupported>([&] { render(ifs); }).find("nested more than"),
            std::string::npos);
  // A namespace may not hold itself (or any namespace): no cycles to walk or leak.
  EXPECT_EQ(error_of<InvalidArgument>(
                [] { render("{% set ns = namespace(a=1) %}{% set ns.self = ns %}"); }),
            "test.jinja at 1:30: a namespace cannot hold another namespace");
  EXPECT_NE(error_of<InvalidArgument>([] {
              render(
                  "{% set ns = namespace(x=1) %}{% for i in range(300) %}{% set ns.x = [ns.x] %}"
                  "{% endfor %}");
            }).find("nested deeper than 256"),
            std::string::npos);
}

// Mutations of the templates above (bytes deleted, inserted or replaced with Jinja's
// punctuation): parsing and rendering throw ferry::Error or nothing. fuzz/chat_template_fuzz.cpp
// goes further; this runs with every test build.
TEST(ChatTemplateLimits, MutatedTemplatesThrowOnlyFerryErrors) {
  const std::string variables =
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
          {"role": "assistant", "content": "a", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}],
          "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})";
  constexpr std::string_view kAlphabet = "{}%#-+()[]'\"|.,:~=! \nab01";
  std::mt19937 rng(15);
  int rendered = 0;
  for (const std::string_view seed : {kLlama2, kLlama3, kSummary, kToolCalls}) {
    for (int round = 0; round < 500; ++round) {
      std::string source(seed);
      for (int edit = 0; edit < 1 + static_cast<int>(rng() % 4); ++edit) {
        const std::size_t at = rng() % (source.size() + 1);
        const char c = kAlphabet[rng() % kAlphabet.size()];
        switch (rng() % 3) {
          case 0:
            if (at < source.size()) source.erase(at, 1);
            break;
          case 1: source.insert(at, 1, c); break;
          default:
            if (at < source.size()) source[at] = c;
            break;
        }
      }
      try {
        ChatTemplate::parse(source, "mutated").render(variables);
        ++rendered;
      } catch (const Error&) {
      } catch (const std::exception& e) {
        ADD_FAILURE() << "not a ferry::Error: " << e.what() << "\n" << source;
      }
    }
  }
  EXPECT_GT(rendered, 0);  // some mutations still render: the loop reached render()
}

// --- tokenizer_config.json.

TEST(ChatTemplateConfig, ReadsTheStringAndTheDefaultOfTheListForm) {
  EXPECT_EQ(chat_template_from_tokenizer_config(R"({"chat_template": "{{ x }}"})", "c.json"),
            "{{ x }}");
  EXPECT_EQ(chat_template_from_tokenizer_config(
                R"({"chat_template": [{"name": "tool_use", "template": "T"},
                                      {"name": "default", "template": "D"}]})",
                "c.json"),
            "D");
  EXPECT_EQ(chat_template_from_tokenizer_config(R"({"bos_token": "<s>"})", "c.json"), std::nullopt);
  EXPECT_EQ(chat_template_from_tokenizer_config(R"({"chat_template": null})", "c.json"),
            std::nullopt);
}

TEST(ChatTemplateConfig, RejectsWhatCannotBeATemplate) {
  EXPECT_EQ(error_of<CorruptFile>([] { chat_template_from_tokenizer_config("[1]", "c.json"); }),
            "c.json: not a JSON object");
  EXPECT_EQ(error_of<CorruptFile>([] { chat_template_from_tokenizer_config("{", "c.json"); }),
            "c.json: not a JSON object");
  EXPECT_EQ(error_of<CorruptFile>(
                [] { chat_template_from_tokenizer_config(R"({"chat_template": 3})", "c.json"); }),
            "c.json: chat_template must be a string or a list of {name, template}, not number");
  EXPECT_EQ(error_of<CorruptFile>([] {
              chat_template_from_tokenizer_config(
                  R"({"chat_template": [{"name": "rag", "template": "R"}]})", "c.json");
            }),
            "c.json: chat_template has no template named 'default'");
  EXPECT_EQ(error_of<CorruptFile>([] {
              chat_template_from_tokenizer_config(R"({"chat_template": [{"name": 1}]})", "c.json");
            }),
            "c.json: each chat_template entry needs a string name and template");
}

}  // namespace
}  // namespace ferry::models
