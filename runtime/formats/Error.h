//===- Error.h - Errors raised while reading user files ---------*- C++ -*-===//
//
// Every failure caused by user input (a file, a field, a flag) is reported as
// a FormatError whose message names the file and the field, so the CLI can
// print one clear line and exit non-zero.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_FORMATS_ERROR_H
#define BITLOOM_FORMATS_ERROR_H

#include <stdexcept>
#include <string>

namespace bitloom {

class FormatError : public std::runtime_error {
public:
  /// `file` is the path, `field` names what was wrong inside it (a JSON key,
  /// a tensor name, a header field); either may be empty.
  FormatError(const std::string &file, const std::string &field,
              const std::string &what)
      : std::runtime_error(compose(file, field, what)) {}

private:
  static std::string compose(const std::string &file, const std::string &field,
                             const std::string &what) {
    std::string msg;
    if (!file.empty())
      msg += file + ": ";
    if (!field.empty())
      msg += field + ": ";
    return msg + what;
  }
};

} // namespace bitloom

#endif // BITLOOM_FORMATS_ERROR_H
