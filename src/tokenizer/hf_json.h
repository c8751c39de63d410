// Reading tokenizer.json values with errors that name the JSON path and what was expected,
// e.g. "/pre_tokenizer/pretokenizers/1/behavior: expected one of Removed, Isolated, ...".
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/error.h"

namespace distill::hf_json {

using nlohmann::json;

inline std::string kind_of(const json& j) {
  return j.is_null() ? "null" : j.is_object() ? "an object" : j.is_array() ? "an array"
       : j.is_string() ? "a string" : j.is_boolean() ? "a boolean" : "a number";
}

inline std::string child(const std::string& path, std::string_view key) {
  return path + "/" + std::string(key);
}
inline std::string child(const std::string& path, size_t index) {
  return path + "/" + std::to_string(index);
}

inline const json& require_object(const json& j, const std::string& path) {
  if (!j.is_object()) throw Error("{}: expected an object, found {}", path, kind_of(j));
  return j;
}

inline const json& require_array(const json& j, const std::string& path) {
  if (!j.is_array()) throw Error("{}: expected an array, found {}", path, kind_of(j));
  return j;
}

inline const json& field(const json& obj, std::string_view key, const std::string& path) {
  require_object(obj, path);
  auto it = obj.find(key);
  if (it == obj.end()) throw Error("{}: missing field \"{}\"", path, key);
  return *it;
}

// A field that may be absent or null.
inline const json* optional_field(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

inline std::string string_field(const json& obj, std::string_view key, const std::string& path) {
  const json& v = field(obj, key, path);
  if (!v.is_string())
    throw Error("{}: expected a string, found {}", child(path, key), kind_of(v));
  return v.get<std::string>();
}

inline std::string string_or(const json& obj, std::string_view key, const std::string& path,
                             std::string fallback) {
  const json* v = optional_field(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_string())
    throw Error("{}: expected a string, found {}", child(path, key), kind_of(*v));
  return v->get<std::string>();
}

inline bool bool_or(const json& obj, std::string_view key, const std::string& path,
                    bool fallback) {
  const json* v = optional_field(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean())
    throw Error("{}: expected true or false, found {}", child(path, key), kind_of(*v));
  return v->get<bool>();
}

inline int64_t int_field(const json& obj, std::string_view key, const std::string& path) {
  const json& v = field(obj, key, path);
  if (!v.is_number_integer())
    throw Error("{}: expected an integer, found {}", child(path, key), kind_of(v));
  return v.get<int64_t>();
}

inline int64_t int_or(const json& obj, std::string_view key, const std::string& path,
                      int64_t fallback) {
  return optional_field(obj, key) == nullptr ? fallback : int_field(obj, key, path);
}

// The "type" of a component object ({"type": "NFC"}).
inline std::string type_of(const json& obj, const std::string& path) {
  return string_field(obj, "type", path);
}

}  // namespace distill::hf_json
