// The machinery behind pgrouter's config loader (config.cpp): address and scalar parsers, the Loader that
// records errors with line and column, and the typed key makers from which each section's declarative
// table is built. Private to src/control/config.cpp (included there only).
#pragma once
#include <arpa/inet.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "pgrouter/control/config.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::control::config_detail {
// ---------------------------------------------------------------- addresses

// An IPv4 or IPv6 network. IPv4-mapped IPv6 ("::ffff:1.2.3.4") is folded into IPv4 so that a client
// reaching a dual-stack listener matches the IPv4 rules written for it.
struct Network {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4
  int prefix = 0;
};

inline std::optional<Network> parse_network(std::string_view text) {
  std::string_view address = text;
  std::optional<int> prefix;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    address = text.substr(0, slash);
    std::string_view digits = text.substr(slash + 1);
    int value = -1;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    prefix = value;
  }
  // A scope id ("fe80::1%eth0") says which interface, not which address.
  std::string host(address.substr(0, address.find('%')));
  Network net;
  if (inet_pton(AF_INET, host.c_str(), net.bytes.data()) == 1) {
    net.prefix = prefix.value_or(32);
    return net.prefix <= 32 && net.prefix >= 0 ? std::optional(net) : std::nullopt;
  }
  if (inet_pton(AF_INET6, host.c_str(), net.bytes.data()) != 1) return std::nullopt;
  net.v6 = true;
  net.prefix = prefix.value_or(128);
  if (net.prefix < 0 || net.prefix > 128) return std::nullopt;
  static constexpr std::array<uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (net.prefix >= 96 && std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), net.bytes.begin())) {
    Network v4;
    std::copy_n(net.bytes.begin() + 12, 4, v4.bytes.begin());
    v4.prefix = net.prefix - 96;
    return v4;
  }
  return net;
}

inline bool network_contains(const Network& net, const Network& address) {
  if (net.v6 != address.v6) return false;
  int full_bytes = net.prefix / 8;
  if (!std::equal(net.bytes.begin(), net.bytes.begin() + full_bytes, address.bytes.begin())) return false;
  int rest_bits = net.prefix % 8;
  if (rest_bits == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest_bits));
  return (net.bytes[full_bytes] & mask) == (address.bytes[full_bytes] & mask);
}

inline bool list_matches(const std::vector<std::string>& names, std::string_view name) {
  return names.empty() ||
         std::any_of(names.begin(), names.end(), [&](const auto& n) { return n == "all" || n == name; });
}

// ---------------------------------------------------------------- scalar parsers

inline std::optional<int64_t> parse_int(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Splits "64MB" into the number and the unit, allowing a space between them.
inline std::optional<std::pair<int64_t, std::string>> split_number_unit(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 15) return std::nullopt;  // 15 digits cannot overflow after scaling below
  auto number = parse_int(text.substr(0, digits));
  std::string_view unit = text.substr(digits);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  return std::pair{*number, util::ascii_lower(unit)};
}

inline std::optional<int64_t> parse_size(std::string_view text) {
  auto parts = split_number_unit(text);
  if (!parts) return std::nullopt;
  static const std::map<std::string, int64_t> kUnits = {
      {"", 1}, {"b", 1}, {"kb", 1024}, {"mb", 1024 * 1024}, {"gb", 1024 * 1024 * 1024}};
  auto unit = kUnits.find(parts->second);
  if (unit == kUnits.end() || parts->first > INT64_MAX / unit->second) return std::nullopt;
  return parts->first * unit->second;
}

inline size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: a swapped pair of letters ("szie") costs one edit, like a typo does.
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// ---------------------------------------------------------------- the loader

// One "key: value" pair of a YAML map (or one list element, then key == value).
struct Field {
  std::string name;
  YAML::Node key;
  YAML::Node value;
  // Errors point at the value; a missing value (null) has no useful mark, so they point at the key.
  YAML::Mark mark() const { return value.IsDefined() && !value.IsNull() ? value.Mark() : key.Mark(); }
};

class Loader {
 public:
  Loader(std::string file, std::filesystem::path base_dir, Config& config)
      : file_(std::move(file)), base_dir_(std::move(base_dir)), config(config) {}

  void error_at(const YAML::Mark& mark, std::string message) {
    if (mark.is_null()) {
      errors.push_back({file_, 0, 0, std::move(message)});
    } else {
      errors.push_back({file_, mark.line + 1, mark.column + 1, std::move(message)});
    }
  }
  void error_at(const Field& f, std::string message) { error_at(f.mark(), std::move(message)); }

  // The scalar value of a key with ${VAR} substituted; nullopt (error recorded) if it is missing or not a
  // scalar.
  std::optional<std::string> text(const Field& f) {
    if (!f.value.IsDefined() || f.value.IsNull()) {
      error_at(f, fmt::format("'{}' needs a value", f.name));
      return std::nullopt;
    }
    if (!f.value.IsScalar()) {
      error_at(f, fmt::format("'{}' must be a single value, not a list or map", f.name));
      return std::nullopt;
    }
    return substitute_env(f.value.Scalar(), f.mark());
  }

  std::string resolve_path(const std::string& path) const {
    if (path.empty() || base_dir_.empty() || std::filesystem::path(path).is_absolute()) return path;
    return (base_dir_ / path).string();
  }

  std::string file_;
  std::filesystem::path base_dir_;
  Config& config;  // filled section by section; later sections may read earlier ones (pool, auth)
  std::vector<ConfigError> errors;

 private:
  std::optional<std::string> substitute_env(std::string_view raw, const YAML::Mark& mark) {
    std::string out;
    bool ok = true;
    size_t pos = 0;
    while (true) {
      size_t start = raw.find("${", pos);
      if (start == std::string_view::npos) break;
      out.append(raw.substr(pos, start - pos));
      size_t end = raw.find('}', start + 2);
      if (end == std::string_view::npos) {
        error_at(mark, "unterminated '${' in value");
        return std::nullopt;
      }
      std::string name(raw.substr(start + 2, end - start - 2));
      if (const char* value = std::getenv(name.c_str()); value != nullptr && !name.empty()) {
        out += value;
      } else {
        error_at(mark, fmt::format("environment variable '{}' is not set", name));
        ok = false;
      }
      pos = end + 1;
    }
    out.append(raw.substr(pos));
    return ok ? std::optional(out) : std::nullopt;
  }
};

// ---------------------------------------------------------------- key tables

constexpr bool kReloadable = true;
constexpr bool kNeedsRestart = false;

template <class S>
struct Key {
  std::string_view name;
  // Whether a reload may change it; listeners and worker counts are fixed for the life of the process.
  bool reloadable = kReloadable;
  bool required = false;
  std::string_view exclusive_group;  // at most one key of a group may be set (password, password_file, ...)
  std::function<void(Loader&, const Field&, S&)> apply;
};

template <class S>
struct Section {
  std::string_view where;  // for messages: "in pool", "in a databases entry"
  std::vector<Key<S>> keys;
  // Checks that involve several keys, and defaults that depend on other keys.
  std::function<void(Loader&, const Field&, S&)> finish;
};

template <class S>
Key<S> required(Key<S> key) {
  key.required = true;
  return key;
}

template <class S>
Key<S> grouped(std::string_view group, Key<S> key) {
  key.exclusive_group = group;
  return key;
}

// A key whose text parses into a value; parse returns nullopt for a bad or out-of-range value, and
// expected says what a good one looks like.
template <class S, class T, class Parse>
Key<S> parsed_key(std::string_view name, T S::*member, bool reloadable, std::string expected, Parse parse) {
  return {name, reloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            auto text = l.text(f);
            if (!text) return;
            if (auto value = parse(*text)) {
              s.*member = static_cast<T>(*value);
            } else {
              l.error_at(f, fmt::format("'{}' must be {}, not '{}'", f.name, expected, *text));
            }
          }};
}

template <class S, class T>
Key<S> int_key(std::string_view name, T S::*member, int64_t min, int64_t max, bool reloadable) {
  return parsed_key(name, member, reloadable, fmt::format("an integer from {} to {}", min, max),
                    [=](std::string_view text) -> std::optional<int64_t> {
                      auto value = parse_int(text);
                      return value && *value >= min && *value <= max ? value : std::nullopt;
                    });
}

template <class S>
Key<S> port_key(std::string_view name, uint16_t S::*member, int64_t min, bool reloadable) {
  return int_key(name, member, min, 65535, reloadable);
}

template <class S>
Key<S> size_key(std::string_view name, int S::*member, bool reloadable) {
  return parsed_key(name, member, reloadable, "a size like 8192, 512kB, 64MB or 1GB (above 0, below 2GB)",
                    [](std::string_view text) -> std::optional<int64_t> {
                      auto value = parse_size(text);
                      return value && *value > 0 && *value <= INT_MAX ? value : std::nullopt;
                    });
}

template <class S>
Key<S> duration_key(std::string_view name, Millis S::*member, bool reloadable) {
  return parsed_key(name, member, reloadable, "a positive duration like 250ms, 5s, 10m or 1h",
                    [](std::string_view text) -> std::optional<Millis> {
                      auto value = parse_duration(text);
                      return value && value->count() > 0 ? value : std::nullopt;
                    });
}

// A timeout that may be switched off: 0 disables it.
template <class S>
Key<S> timeout_key(std::string_view name, Millis S::*member, bool reloadable) {
  return parsed_key(name, member, reloadable, "a duration like 500ms, 30s or 10m, or 0 to disable",
                    [](std::string_view text) -> std::optional<Millis> {
                      auto value = parse_duration(text);
                      return value && value->count() >= 0 ? value : std::nullopt;
                    });
}

template <class S, class E>
Key<S> choice_key(std::string_view name, E S::*member, std::vector<std::pair<std::string_view, E>> choices,
                  bool reloadable) {
  std::string names;
  for (const auto& choice : choices) names += fmt::format("{}{}", names.empty() ? "" : " | ", choice.first);
  return parsed_key(name, member, reloadable, "one of " + names,
                    [=](std::string_view text) -> std::optional<E> {
                      auto it = std::find_if(choices.begin(), choices.end(),
                                             [&](const auto& choice) { return choice.first == text; });
                      return it == choices.end() ? std::nullopt : std::optional<E>(it->second);
                    });
}

// check, when given, returns an empty string for a good value or what a good value looks like.
template <class S>
Key<S> string_key(std::string_view name, std::string S::*member, bool reloadable,
                  std::string (*check)(std::string_view) = nullptr) {
  return {name, reloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            auto text = l.text(f);
            if (!text) return;
            if (check != nullptr) {
              if (std::string expected = check(*text); !expected.empty()) {
                l.error_at(f, fmt::format("'{}' must be {}", f.name, expected));
                return;
              }
            }
            s.*member = *text;
          }};
}

template <class S>
Key<S> path_key(std::string_view name, std::string S::*member, bool reloadable) {
  return {name, reloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            auto text = l.text(f);
            if (!text) return;
            std::string path = l.resolve_path(*text);
            if (std::ifstream(path).fail()) {
              l.error_at(f, fmt::format("'{}': cannot read '{}': {}", f.name, path, std::strerror(errno)));
              return;
            }
            s.*member = path;
          }};
}

// The secret is the file's content without its trailing newline (as `echo secret > file` writes it).
template <class S>
Key<S> secret_file_key(std::string_view name, std::string S::*member) {
  return {name, kReloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            auto text = l.text(f);
            if (!text) return;
            std::string path = l.resolve_path(*text);
            std::ifstream in(path, std::ios::binary);
            std::stringstream content;
            if (!in || !(content << in.rdbuf())) {
              l.error_at(f, fmt::format("'{}': cannot read '{}': {}", f.name, path, std::strerror(errno)));
              return;
            }
            std::string secret = content.str();
            while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
            s.*member = secret;
          }};
}

template <class S>
Key<S> secret_env_key(std::string_view name, std::string S::*member) {
  return {name, kReloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            auto variable = l.text(f);
            if (!variable) return;
            const char* value = std::getenv(variable->c_str());
            if (value == nullptr) {
              l.error_at(f, fmt::format("'{}': environment variable '{}' is not set", f.name, *variable));
              return;
            }
            s.*member = value;
          }};
}

// A list of names; a single scalar is taken as a list of one. check validates each entry.
template <class S>
Key<S> name_list_key(std::string_view name, std::vector<std::string> S::*member,
                     std::string (*check)(std::string_view) = nullptr) {
  return {name, kReloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            std::vector<Field> items;
            if (f.value.IsSequence()) {
              for (const auto& item : f.value) items.push_back({f.name, item, item});
            } else {
              items.push_back(f);
            }
            std::vector<std::string> names;
            for (const auto& item : items) {
              auto text = l.text(item);
              if (!text) continue;
              if (std::string expected = check != nullptr ? check(*text) : ""; !expected.empty()) {
                l.error_at(item, fmt::format("'{}' entries must be {}, not '{}'", f.name, expected, *text));
                continue;
              }
              names.push_back(*text);
            }
            s.*member = std::move(names);
          }};
}

template <class S>
void apply_section(Loader& l, const Field& f, const Section<S>& section, S& target) {
  // A section whose keys are all commented out is empty, not an error.
  if (!f.value.IsMap() && !f.value.IsNull()) {
    l.error_at(f, f.name.empty() ? "the config must be a map of sections"
                                 : fmt::format("'{}' must be a map of keys", f.name));
    return;
  }
  std::map<std::string_view, Field> present;
  std::map<std::string_view, std::string_view> group_members;
  for (const auto& pair : f.value.IsMap() ? f.value : YAML::Node(YAML::NodeType::Map)) {
    Field field{pair.first.IsScalar() ? pair.first.Scalar() : "", pair.first, pair.second};
    auto key = std::find_if(section.keys.begin(), section.keys.end(),
                            [&](const auto& k) { return k.name == field.name; });
    if (key == section.keys.end()) {
      std::string hint;
      for (const auto& k : section.keys) {
        if (edit_distance(field.name, k.name) <= (k.name.size() < 5 ? 1u : 2u))
          hint = fmt::format("; did you mean '{}'?", k.name);
      }
      l.error_at(field.key.Mark(), fmt::format("unknown key '{}' {}{}", field.name, section.where, hint));
      continue;
    }
    if (present.contains(key->name)) {
      l.error_at(field.key.Mark(), fmt::format("duplicate key '{}' {} (first at line {})", field.name,
                                               section.where, present.at(key->name).key.Mark().line + 1));
      continue;
    }
    if (!key->exclusive_group.empty()) {
      if (auto other = group_members.find(key->exclusive_group); other != group_members.end()) {
        l.error_at(field.key.Mark(),
                   fmt::format("'{}' and '{}' are alternatives: set only one", other->second, key->name));
      }
      group_members.emplace(key->exclusive_group, key->name);
    }
    present.emplace(key->name, field);
  }
  // Table order, not file order, so a key may rely on keys declared before it in the table.
  for (const auto& key : section.keys) {
    if (auto it = present.find(key.name); it != present.end()) {
      key.apply(l, it->second, target);
    } else if (key.required) {
      l.error_at(f, fmt::format("missing required key '{}' {}", key.name, section.where));
    }
  }
  if (section.finish) section.finish(l, f, target);
}

template <class S, class T>
Key<S> section_key(std::string_view name, T S::*member, const Section<T>& (*section)(), bool reloadable) {
  return {name, reloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            apply_section(l, f, section(), s.*member);
          }};
}

// A list of maps, each read with one section table; unique names a field that must differ between entries.
template <class S, class T>
Key<S> list_key(std::string_view name, std::vector<T> S::*member, const Section<T>& (*section)(),
                size_t min_items, std::string T::*unique = nullptr) {
  return {name, kReloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            if (!f.value.IsSequence() || f.value.size() < min_items) {
              l.error_at(f, fmt::format("'{}' must be a list of at least {} entr{}", f.name, min_items,
                                        min_items == 1 ? "y" : "ies"));
              if (!f.value.IsSequence()) return;
            }
            std::map<std::string, int> first_line;
            for (const auto& element : f.value) {
              T item{};
              apply_section(l, Field{f.name, element, element}, section(), item);
              if (unique != nullptr) {
                int line = element.Mark().line + 1;
                auto [it, inserted] = first_line.emplace(item.*unique, line);
                if (!inserted) {
                  l.error_at(element.Mark(), fmt::format("duplicate name '{}' in {} (first at line {})",
                                                         item.*unique, f.name, it->second));
                }
              }
              (s.*member).push_back(std::move(item));
            }
          }};
}

}  // namespace pgrouter::control::config_detail
