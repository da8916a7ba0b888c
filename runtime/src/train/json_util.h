//===- json_util.h - integers from untrusted JSON (internal) ------*- C++ -*-===//
//
// nlohmann::json keeps a number that does not fit 64 bits as a double, and
// get<int64_t>() of such a double (or of 1e300) is undefined behaviour; a
// fractional number is silently truncated. The readers of manifests,
// checkpoints and safetensors headers take integers through these instead:
// anything but an integer in range is an Error naming `what`.
//
//===----------------------------------------------------------------------===//
#ifndef MMREC_RUNTIME_TRAIN_JSON_UTIL_H
#define MMREC_RUNTIME_TRAIN_JSON_UTIL_H

#include "mmrec/runtime.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace mmrec::train::detail {

inline int64_t jsonInt(const nlohmann::json &v, const std::string &what) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      throw rt::Error(what + " is out of range: " + v.dump());
    return int64_t(u);
  }
  if (v.is_number_integer())
    return v.get<int64_t>();
  throw rt::Error(what + " must be an integer, got " + v.dump());
}

inline uint64_t jsonUint(const nlohmann::json &v, const std::string &what,
                         uint64_t max = std::numeric_limits<uint64_t>::max()) {
  uint64_t u;
  if (v.is_number_unsigned()) {
    u = v.get<uint64_t>();
  } else if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    u = uint64_t(v.get<int64_t>());
  } else {
    throw rt::Error(what + " must be a non-negative integer, got " + v.dump());
  }
  if (u > max)
    throw rt::Error(what + " is out of range: " + v.dump());
  return u;
}

template <class T, class F> std::vector<T> jsonArray(const nlohmann::json &v, const std::string &what, F one) {
  if (!v.is_array())
    throw rt::Error(what + " must be an array, got " + v.dump());
  std::vector<T> out;
  for (const auto &x : v)
    out.push_back(one(x));
  return out;
}

} // namespace mmrec::train::detail

#endif
