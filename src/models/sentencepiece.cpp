#include "sentencepiece.h"

#include <fmt/format.h>

#include "ferry/core/error.h"

#if FERRY_HAVE_SENTENCEPIECE
#include <dlfcn.h>
#include <new>
#include <sentencepiece_processor.h>
#endif

namespace ferry::models::detail {

#if FERRY_HAVE_SENTENCEPIECE

// Note [sentencepiece is dlopen'ed]
// Debian's libsentencepiece.so.0 carries its own copy of protobuf-lite with exported symbols;
// linked into a process that also loads LibTorch's libprotobuf.so.32, the two interpose each
// other and the process crashes in static initialisation, before main. So ferry does not link
// it: the first tokenizer.model dlopen()s it with RTLD_LOCAL (its symbols stay out of the global
// scope) and RTLD_DEEPBIND (its own references bind to its own protobuf). Everything is then
// called through the processor's vtable; the three non-virtual functions used (the constructor
// and util::Status's destructor and message) are looked up with dlsym, and Status values are
// only ever built in place and destroyed through that pointer, so no symbol of the library is
// referenced at link time.
namespace {

namespace spm = sentencepiece;

struct Library {
  void* handle = nullptr;
  void (*construct)(spm::SentencePieceProcessor*) = nullptr;
  void (*destroy_status)(spm::util::Status*) = nullptr;
  const char* (*status_message)(const spm::util::Status*) = nullptr;
  std::string error;  // why it could not be loaded
};

template <class F>
F symbol(void* handle, const char* name) {
  return reinterpret_cast<F>(::dlsym(handle, name));
}

const Library& library() {
  static const Library lib = [] {
    Library l;
#if defined(__SANITIZE_ADDRESS__)
    l.error =
        "the sanitizer runtime does not support RTLD_DEEPBIND (Note [sentencepiece is dlopen'ed])";
    return l;
#else
    for (const char* name :
         {FERRY_SENTENCEPIECE_PATH, "libsentencepiece.so.0", "libsentencepiece.so"}) {
      l.handle = ::dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (l.handle != nullptr) break;
      l.error += fmt::format("{}{}", l.error.empty() ? "" : "; ", ::dlerror());
    }
    if (l.handle == nullptr) return l;
    l.construct =
        symbol<decltype(l.construct)>(l.handle, "_ZN13sentencepiece22SentencePieceProcessorC1Ev");
    l.destroy_status =
        symbol<decltype(l.destroy_status)>(l.handle, "_ZN13sentencepiece4util6StatusD1Ev");
    l.status_message = symbol<decltype(l.status_message)>(
        l.handle, "_ZNK13sentencepiece4util6Status13error_messageEv");
    if (l.construct == nullptr || l.destroy_status == nullptr || l.status_message == nullptr) {
      l.error = "libsentencepiece lacks the expected symbols (another version?)";
      l.handle = nullptr;
    }
    return l;
#endif
  }();
  return lib;
}

// A util::Status built in place from a call's result; "" when ok, else its message.
template <class Call>
std::string status_of(Call&& call) {
  alignas(spm::util::Status) unsigned char storage[sizeof(spm::util::Status)];
  auto* status = new (storage) spm::util::Status(call());  // elided: no copy constructor
  std::string message = status->ok() ? "" : library().status_message(status);
  library().destroy_status(status);
  return message;
}

}  // namespace

struct SentencePiece::Processor {
  spm::SentencePieceProcessor* spm = nullptr;
  ~Processor() { delete spm; }  // virtual: runs the library's destructor
};

std::shared_ptr<const SentencePiece> SentencePiece::open(const std::filesystem::path& file) {
  FERRY_CHECK(std::filesystem::is_regular_file(file), IoError, "{}: no such file", file.string());
  const Library& lib = library();
  if (lib.handle == nullptr) {
    throw Unsupported(
        fmt::format("{}: cannot load libsentencepiece to read it: {}", file.string(), lib.error),
        ErrorFields{.file = file.string()});
  }
  auto processor = std::make_unique<Processor>();
  void* memory = ::operator new(sizeof(spm::SentencePieceProcessor));
  lib.construct(static_cast<spm::SentencePieceProcessor*>(memory));
  processor->spm = static_cast<spm::SentencePieceProcessor*>(memory);
  const std::string error = status_of([&] { return processor->spm->Load(file.string()); });
  if (!error.empty()) {
    throw CorruptFile(fmt::format("{}: not a SentencePiece model: {}", file.string(), error),
                      ErrorFields{.file = file.string()});
  }
  return std::shared_ptr<const SentencePiece>(new SentencePiece(std::move(processor)));
}

std::vector<std::int64_t> SentencePiece::encode(std::string_view text) const {
  std::vector<int> ids;
  const std::string error = status_of([&] { return processor_->spm->Encode(text, &ids); });
  FERRY_ASSERT(error.empty(), "sentencepiece Encode: {}", error);
  return {ids.begin(), ids.end()};
}

std::string SentencePiece::decode(const std::vector<std::int64_t>& ids) const {
  std::string text;
  const std::vector<int> narrow(ids.begin(), ids.end());
  const std::string error = status_of([&] { return processor_->spm->Decode(narrow, &text); });
  FERRY_ASSERT(error.empty(), "sentencepiece Decode: {}", error);
  return text;
}

std::int64_t SentencePiece::size() const { return processor_->spm->GetPieceSize(); }

const std::string& SentencePiece::piece(std::int64_t id) const {
  return processor_->spm->IdToPiece(static_cast<int>(id));
}

bool SentencePiece::is_control(std::int64_t id) const {
  return processor_->spm->IsControl(static_cast<int>(id));
}

std::optional<std::int64_t> SentencePiece::bos_id() const {
  const int id = processor_->spm->bos_id();
  return id >= 0 ? std::optional<std::int64_t>(id) : std::nullopt;
}

std::optional<std::int64_t> SentencePiece::eos_id() const {
  const int id = processor_->spm->eos_id();
  return id >= 0 ? std::optional<std::int64_t>(id) : std::nullopt;
}

#else  // built without libsentencepiece: only open() is reachable, and it refuses.

struct SentencePiece::Processor {};

std::shared_ptr<const SentencePiece> SentencePiece::open(const std::filesystem::path& file) {
  throw Unsupported(
      fmt::format("{}: reading tokenizer.model needs libsentencepiece, and ferry was built "
                  "without it (install libsentencepiece-dev, e.g. scripts/deps.sh, and rebuild; "
                  "or give the model folder a tokenizer.json)",
                  file.string()),
      ErrorFields{.file = file.string()});
}

std::vector<std::int64_t> SentencePiece::encode(std::string_view) const { return {}; }
std::string SentencePiece::decode(const std::vector<std::int64_t>&) const { return {}; }
std::int64_t SentencePiece::size() const { return 0; }
const std::string& SentencePiece::piece(std::int64_t) const {
  static const std::string kNone;
  return kNone;
}
bool SentencePiece::is_control(std::int64_t) const { return false; }
std::optional<std::int64_t> SentencePiece::bos_id() const { return std::nullopt; }
std::optional<std::int64_t> SentencePiece::eos_id() const { return std::nullopt; }

#endif

SentencePiece::SentencePiece(std::unique_ptr<Processor> processor)
    : processor_(std::move(processor)) {}
SentencePiece::~SentencePiece() = default;

}  // namespace ferry::models::detail
