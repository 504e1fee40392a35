#pragma once
// An answer of the OpenAI-style API that is an error: its HTTP status and the body
// {"error": {"message", "type", "param", "code"}} (docs/serve.md).

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace ferry::serve {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;            // the request field at fault; "" is null
  std::string code;             // a machine-readable code; "" is null
  int retry_after_seconds = 1;  // a 429's Retry-After header

  nlohmann::json body() const;
};

// Thrown while a request is read; the handler answers with its error.
class ApiException : public std::runtime_error {
 public:
  explicit ApiException(ApiError error)
      : std::runtime_error(error.message), error_(std::move(error)) {}
  const ApiError& error() const noexcept { return error_; }

 private:
  ApiError error_;
};

// A 400 for request field `param`.
[[noreturn]] void bad_request(std::string param, std::string message, std::string code = "");

}  // namespace ferry::serve
