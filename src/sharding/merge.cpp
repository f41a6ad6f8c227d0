// ScatterMerge and the value comparisons and numeric arithmetic it needs (see the header). Values are
// PostgreSQL's text output; every comparison or combination is exact for the types it accepts, and any
// other type is refused when the merge is built rather than merged approximately.
#include "pgrouter/sharding/merge.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::sharding {
namespace {

namespace oid {
constexpr uint32_t boolean = 16, bytea = 17, name = 19, int8 = 20, int2 = 21, int4 = 23, text = 25, oid = 26,
                   float4 = 700, float8 = 701, bpchar = 1042, varchar = 1043, date = 1082, timestamp = 1114,
                   timestamptz = 1184, numeric = 1700, uuid = 2950;
}

int sign_of(int64_t d) { return d < 0 ? -1 : d > 0; }

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// ---- numeric ----

// A numeric value: |value| = mag * 10^-scale, mag without leading zeros ("" is zero).
struct Num {
  enum Kind : uint8_t { finite, nan, pinf, ninf } kind = finite;
  bool neg = false;
  std::string mag;
  int scale = 0;
};

std::optional<Num> parse_num(std::string_view s) {
  Num n;
  if (s == "NaN")
    n.kind = Num::nan;
  else if (s == "Infinity")
    n.kind = Num::pinf;
  else if (s == "-Infinity")
    n.kind = Num::ninf;
  if (n.kind != Num::finite) return n;
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) n.neg = s[i++] == '-';
  bool digits = false, point = false;
  for (; i < s.size(); ++i) {
    if (s[i] == '.' && !point) {
      point = true;
    } else if (s[i] >= '0' && s[i] <= '9') {
      digits = true;
      if (point) ++n.scale;
      if (!n.mag.empty() || s[i] != '0') n.mag += s[i];
    } else {
      return std::nullopt;
    }
  }
  if (!digits) return std::nullopt;
  if (n.mag.empty()) n.neg = false;
  return n;
}

std::string format_num(const Num& n) {
  if (n.kind == Num::nan) return "NaN";
  if (n.kind == Num::pinf) return "Infinity";
  if (n.kind == Num::ninf) return "-Infinity";
  std::string digits = n.mag;
  if (digits.size() < size_t(n.scale) + 1) digits.insert(0, size_t(n.scale) + 1 - digits.size(), '0');
  if (n.scale > 0) digits.insert(digits.size() - size_t(n.scale), ".");
  return (n.neg && !n.mag.empty() ? "-" : "") + digits;
}

// Both magnitudes at the larger scale.
void align(Num& a, Num& b) {
  int scale = std::max(a.scale, b.scale);
  for (Num* n : {&a, &b}) {
    if (!n->mag.empty()) n->mag.append(size_t(scale - n->scale), '0');
    n->scale = scale;
  }
}

int compare_mag(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  return sign_of(a.compare(b));
}

std::string add_mag(const std::string& a, const std::string& b) {
  std::string out;
  int carry = 0;
  for (size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
    int d = carry + (i < a.size() ? a[a.size() - 1 - i] - '0' : 0) +
            (i < b.size() ? b[b.size() - 1 - i] - '0' : 0);
    out += char('0' + d % 10);
    carry = d / 10;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::string sub_mag(const std::string& a, const std::string& b) {  // a >= b
  std::string out;
  int borrow = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    int d = (a[a.size() - 1 - i] - '0') - borrow - (i < b.size() ? b[b.size() - 1 - i] - '0' : 0);
    borrow = d < 0;
    out += char('0' + (d + 10) % 10);
  }
  while (!out.empty() && out.back() == '0') out.pop_back();
  std::reverse(out.begin(), out.end());
  return out;
}

int compare_num(Num a, Num b) {
  auto rank = [](const Num& n) {
    return n.kind == Num::ninf ? 0 : n.kind == Num::finite ? 1 : n.kind == Num::pinf ? 2 : 3;
  };
  if (rank(a) != rank(b) || a.kind != Num::finite) return sign_of(rank(a) - rank(b));
  if (a.neg != b.neg) return a.neg ? -1 : 1;
  align(a, b);
  int c = compare_mag(a.mag, b.mag);
  return a.neg ? -c : c;
}

// ---- date/time ----

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {  // proleptic Gregorian, as PostgreSQL's dates
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = unsigned(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + int64_t(doe) - 719468;
}

// Reads `n` digits (n = 0: one or more) at s[i].
std::optional<int64_t> digits_at(std::string_view s, size_t& i, size_t n) {
  size_t start = i;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9' && (n == 0 || i - start < n)) ++i;
  if (i == start || (n && i - start != n)) return std::nullopt;
  return parse_int(s.substr(start, i - start));
}

// An ISO date, timestamp or timestamptz as microseconds since 1970-01-01 UTC.
std::optional<__int128> parse_datetime(std::string_view s) {
  if (s == "infinity") return __int128(1) << 100;
  if (s == "-infinity") return -(__int128(1) << 100);
  bool bc = s.size() > 3 && s.substr(s.size() - 3) == " BC";
  if (bc) s.remove_suffix(3);
  size_t i = 0;
  auto y = digits_at(s, i, 0);
  if (!y || i >= s.size() || s[i++] != '-') return std::nullopt;
  auto mo = digits_at(s, i, 2);
  if (!mo || i >= s.size() || s[i++] != '-') return std::nullopt;
  auto d = digits_at(s, i, 2);
  if (!d) return std::nullopt;
  __int128 us = __int128(days_from_civil(bc ? 1 - *y : *y, unsigned(*mo), unsigned(*d))) * 86400000000;
  if (i == s.size()) return us;
  if (s[i++] != ' ') return std::nullopt;
  auto h = digits_at(s, i, 2);
  auto mi = i < s.size() && s[i++] == ':' ? digits_at(s, i, 2) : std::nullopt;
  auto se = i < s.size() && s[i++] == ':' ? digits_at(s, i, 2) : std::nullopt;
  if (!h || !mi || !se) return std::nullopt;
  us += ((*h * 60 + *mi) * 60 + *se) * int64_t(1000000);
  if (i < s.size() && s[i] == '.') {
    int64_t scale = 100000;
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, scale /= 10) us += (s[i] - '0') * scale;
  }
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {  // a UTC offset: +HH[:MM[:SS]]
    int sign = s[i++] == '-' ? -1 : 1;
    int64_t off = 0;
    for (int part = 0; part < 3 && i < s.size(); ++part) {
      if (part > 0 && s[i++] != ':') return std::nullopt;
      auto v = digits_at(s, i, 2);
      if (!v) return std::nullopt;
      off += *v * (part == 0 ? 3600 : part == 1 ? 60 : 1);
    }
    us -= sign * off * int64_t(1000000);
  }
  if (i != s.size()) return std::nullopt;
  return us;
}

std::string_view trim_trailing_spaces(std::string_view s) {
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// PostgreSQL's NBASE (10000) weight and first digit of a nonzero value, as select_div_scale reads them.
std::pair<int, int> nbase_lead(const Num& n) {
  if (n.mag.empty()) return {0, 0};
  int exp10 = int(n.mag.size()) - 1 - n.scale;                // of the leading decimal digit
  int weight = exp10 >= 0 ? exp10 / 4 : -((-exp10 + 3) / 4);  // floor(exp10 / 4)
  int first = 0;
  for (int e = 4 * weight + 3; e >= 4 * weight; --e) {
    int idx = int(n.mag.size()) - 1 - (e + n.scale);
    first = first * 10 + (idx >= 0 && idx < int(n.mag.size()) ? n.mag[size_t(idx)] - '0' : 0);
  }
  return {weight, first};
}

// numeric.c's select_div_scale: at least 16 significant digits, no less than either input's display scale.
int select_div_scale(const Num& a, const Num& b) {
  auto [w1, f1] = nbase_lead(a);
  auto [w2, f2] = nbase_lead(b);
  int qweight = w1 - w2 - (f1 <= f2 ? 1 : 0);
  int rscale = 16 - qweight * 4;
  rscale = std::max({rscale, a.scale, b.scale, 0});
  return std::min(rscale, 1000);
}

}  // namespace

ValueType value_type(uint32_t t) {
  switch (t) {
    case oid::int2:
    case oid::int4:
    case oid::int8:
    case oid::oid:
      return ValueType::integer;
    case oid::numeric:
      return ValueType::numeric;
    case oid::float4:
    case oid::float8:
      return ValueType::floating;
    case oid::boolean:
      return ValueType::boolean;
    case oid::date:
    case oid::timestamp:
    case oid::timestamptz:
      return ValueType::datetime;
    case oid::uuid:
      return ValueType::uuid;
    case oid::text:
    case oid::varchar:
    case oid::name:
      return ValueType::text;
    case oid::bpchar:
      return ValueType::bpchar;
    case oid::bytea:
      return ValueType::bytea;
    default:
      return ValueType::other;
  }
}

std::optional<int> compare_values(ValueType type, std::string_view a, std::string_view b) {
  switch (type) {
    case ValueType::integer: {
      auto x = parse_int(a), y = parse_int(b);
      if (!x || !y) return std::nullopt;
      return *x < *y ? -1 : *x > *y;
    }
    case ValueType::numeric: {
      auto x = parse_num(a), y = parse_num(b);
      if (!x || !y) return std::nullopt;
      return compare_num(std::move(*x), std::move(*y));
    }
    case ValueType::floating: {
      double x = std::strtod(std::string(a).c_str(), nullptr),
             y = std::strtod(std::string(b).c_str(), nullptr);
      if (std::isnan(x) || std::isnan(y)) return int(std::isnan(x)) - int(std::isnan(y));
      return x < y ? -1 : x > y;
    }
    case ValueType::datetime: {
      auto x = parse_datetime(a), y = parse_datetime(b);
      if (!x || !y) return std::nullopt;
      return *x < *y ? -1 : *x > *y;
    }
    case ValueType::bpchar:  // bpchar ignores trailing spaces
      return sign_of(trim_trailing_spaces(a).compare(trim_trailing_spaces(b)));
    case ValueType::boolean:
    case ValueType::uuid:
    case ValueType::text:
    case ValueType::bytea:
      return sign_of(a.compare(b));  // string_view compares as unsigned bytes (char_traits<char>)
    default:
      return std::nullopt;
  }
}

std::optional<std::string> numeric_add(std::string_view as, std::string_view bs) {
  auto a = parse_num(as), b = parse_num(bs);
  if (!a || !b) return std::nullopt;
  if (a->kind == Num::nan || b->kind == Num::nan) return "NaN";
  if (a->kind != Num::finite && b->kind != Num::finite && a->kind != b->kind) return "NaN";
  if (a->kind != Num::finite) return format_num(*a);
  if (b->kind != Num::finite) return format_num(*b);
  align(*a, *b);
  Num r;
  r.scale = a->scale;
  if (a->neg == b->neg) {
    r.neg = a->neg;
    r.mag = add_mag(a->mag, b->mag);
  } else if (compare_mag(a->mag, b->mag) >= 0) {
    r.neg = a->neg;
    r.mag = sub_mag(a->mag, b->mag);
  } else {
    r.neg = b->neg;
    r.mag = sub_mag(b->mag, a->mag);
  }
  return format_num(r);
}

std::optional<std::string> numeric_avg(std::string_view sum_text, int64_t count) {
  auto sum = parse_num(sum_text);
  if (!sum || count <= 0) return std::nullopt;
  if (sum->kind != Num::finite) return format_num(*sum);
  Num n;
  n.mag = std::to_string(count);
  int rscale = select_div_scale(*sum, n);
  // |sum| * 10^(rscale + 1) / count, truncated, then rounded half away from zero at rscale, as div_var does.
  std::string dividend = sum->mag + std::string(size_t(rscale - sum->scale + 1), '0');
  std::string q;
  unsigned __int128 rem = 0;
  for (char c : dividend) {
    rem = rem * 10 + unsigned(c - '0');
    q += char('0' + int(rem / uint64_t(count)));
    rem %= uint64_t(count);
  }
  bool up = q.back() >= '5';
  q.pop_back();
  q.erase(0, std::min(q.find_first_not_of('0'), q.size()));
  Num r{Num::finite, sum->neg, up ? add_mag(q, "1") : q, rscale};
  if (r.mag.empty()) r.neg = false;
  return format_num(r);
}

// ---- ScatterMerge ----

namespace {

bool is_sum(ColumnRole r) { return r == ColumnRole::sum || r == ColumnRole::avg_sum; }
bool is_count(ColumnRole r) { return r == ColumnRole::count || r == ColumnRole::avg_count; }
bool is_text(ValueType t) { return t == ValueType::text || t == ValueType::bpchar; }

void encode_row(const ScatterMerge::Row& row, std::string& out) {
  out.clear();
  protocol::put_be16(out, uint16_t(row.size()));
  for (const auto& cell : row) {
    protocol::put_be32(out, cell ? uint32_t(cell->size()) : uint32_t(-1));
    if (cell) out += *cell;
  }
}

// The text a value is grouped or de-duplicated by: equal values, equal keys.
std::string normalized(ValueType t, std::string_view v) {
  if (t == ValueType::numeric) {
    auto n = parse_num(v);
    if (!n || n->kind != Num::finite) return std::string(v);
    while (n->scale > 0 && !n->mag.empty() && n->mag.back() == '0') n->mag.pop_back(), --n->scale;
    if (n->mag.empty()) n->scale = 0;
    return format_num(*n);
  }
  if (t == ValueType::floating && std::strtod(std::string(v).c_str(), nullptr) == 0) return "0";
  if (t == ValueType::bpchar) return std::string(trim_trailing_spaces(v));
  return std::string(v);
}

}  // namespace

ScatterMerge::ScatterMerge(const ScatterPlan& plan, const std::vector<std::string_view>& descriptions)
    : plan_(plan), shards_(descriptions.size()), finished_(shards_, false), queues_(shards_) {
  if (plan_.refused) fail("a refused plan");
  if (error_.empty()) read_descriptions(descriptions);
  if (error_.empty()) resolve_columns();
  if (error_.empty()) check_types();
  if (error_.empty()) build_client_description();
  if (plan_.limit == 0) limit_reached_ = true;
}

void ScatterMerge::fail(std::string why) {
  if (error_.empty()) error_ = std::move(why);
}

// One column per field of the first shard's RowDescription; every other shard must describe the same.
void ScatterMerge::read_descriptions(const std::vector<std::string_view>& descriptions) {
  if (descriptions.empty()) return fail("no shards");
  for (size_t s = 0; s < descriptions.size(); ++s) {
    std::string_view body = descriptions[s];
    if (body.size() < 2) return fail("a malformed RowDescription");
    size_t n = protocol::read_be16(body.data()), pos = 2;
    std::vector<Column> cols;
    for (size_t i = 0; i < n; ++i) {
      size_t start = pos;
      auto name = protocol::read_cstring(body, pos);
      if (!name || pos + 18 > body.size()) return fail("a malformed RowDescription");
      Column c{std::string(*name),
               std::string(body.substr(start, pos + 18 - start)),
               protocol::read_be32(body.data() + pos + 6),
               ValueType::other,
               {}};
      c.type = value_type(c.type_oid);
      // Table OIDs and attribute numbers differ between shards; the rest must not.
      c.signature = c.name + '\0' + std::string(body.substr(pos + 6, 12));
      // Binary values pass through a merge that compares and combines nothing; others read text.
      bool compares = plan_.aggregate || !plan_.order_by.empty() || plan_.distinct || plan_.hidden;
      if (compares && protocol::read_be16(body.data() + pos + 16) != 0) return fail("binary-format results");
      cols.push_back(std::move(c));
      pos += 18;
    }
    if (s == 0) {
      columns_ = std::move(cols);
      continue;
    }
    bool same = cols.size() == columns_.size();
    for (size_t i = 0; same && i < cols.size(); ++i) same = cols[i].signature == columns_[i].signature;
    if (!same) return fail("the shards' result columns differ (names, types or type modifiers)");
  }
}

// The plan's columns in full: with `*` every shard column is a plain one; sort keys on hidden columns
// become indexes into the client row before the hidden columns are stripped.
void ScatterMerge::resolve_columns() {
  if (plan_.star) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      plan_.columns.push_back({ColumnRole::plain, i, false});
      plan_.client_columns.push_back({i, false, {}});
    }
  }
  if (columns_.size() != plan_.columns.size() || plan_.hidden > plan_.client_columns.size())
    return fail("the shards returned an unexpected number of columns");
  visible_ = plan_.client_columns.size() - plan_.hidden;
  for (SortKey& k : plan_.order_by) {
    if (!k.hidden && k.column >= visible_) return fail("ORDER BY a position that is not in the select list");
    if (k.hidden) k.column += visible_;
    if (k.column >= plan_.client_columns.size())
      return fail("the shards returned an unexpected number of columns");
  }
}

// Refuses, now, any column whose values the merge could not compare or combine exactly.
void ScatterMerge::check_types() {
  for (size_t j = 0; j < columns_.size(); ++j) {
    const ShardColumn& sc = plan_.columns[j];
    const Column& c = columns_[j];
    std::string type = " (type OID " + std::to_string(c.type_oid) + ")";
    if (is_sum(sc.role) && c.type == ValueType::floating)
      return fail("sum/avg of floating point across shards is not exact");
    if (is_sum(sc.role) && c.type_oid != oid::int8 && c.type_oid != oid::numeric)
      return fail("sum/avg of this type across shards" + type);
    if (is_count(sc.role) && c.type_oid != oid::int8) return fail("a count that is not a bigint");
    if ((sc.role == ColumnRole::min || sc.role == ColumnRole::max) &&
        (c.type == ValueType::other || c.type == ValueType::bytea))
      return fail("min/max of this type across shards" + type);
    if ((sc.role == ColumnRole::min || sc.role == ColumnRole::max) && is_text(c.type) && !sc.collate_c)
      return fail("min/max of a text column across shards needs COLLATE \"C\"");
    bool boolean =
        sc.role == ColumnRole::bool_and || sc.role == ColumnRole::bool_or || sc.role == ColumnRole::every;
    if (boolean && c.type_oid != oid::boolean) return fail("bool_and/bool_or of a non-boolean");
    if ((sc.role == ColumnRole::group_key || plan_.distinct) && c.type == ValueType::other)
      return fail("GROUP BY/DISTINCT on a column of this type across shards" + type);
  }
  for (const HavingTerm& h : plan_.having) {
    const ClientColumn& cc = plan_.client_columns[h.column];
    ValueType t = cc.avg ? ValueType::numeric : columns_[cc.shard_column].type;
    bool number = t == ValueType::integer || t == ValueType::numeric || t == ValueType::floating;
    // Not uuid: its input accepts other spellings than the output's.
    bool equality = (t == ValueType::text || t == ValueType::bpchar) && (h.op == "=" || h.op == "<>");
    if (!(number && !h.string_constant) && !(equality && h.string_constant))
      return fail("HAVING across shards (other than numbers compared with numbers, or text with = or <>)");
  }
  for (const SortKey& k : plan_.order_by) {
    const ClientColumn& cc = plan_.client_columns[k.column];
    ValueType t = cc.avg ? ValueType::numeric : columns_[cc.shard_column].type;
    if (is_text(t) && !k.collate_c) return fail("ORDER BY a text column across shards needs COLLATE \"C\"");
    if (t == ValueType::other || t == ValueType::bytea)
      return fail("ORDER BY a column of this type across shards (type OID " +
                  std::to_string(columns_[cc.shard_column].type_oid) + ")");
  }
}

// The client's columns: the shards' fields, except that avg becomes one numeric column. Hidden columns are
// kept in client_columns_ (sorting needs their types) but not described to the client.
void ScatterMerge::build_client_description() {
  protocol::put_be16(client_description_, uint16_t(visible_));
  for (const ClientColumn& cc : plan_.client_columns) {
    bool shown = client_columns_.size() < visible_;
    if (!cc.avg) {
      client_columns_.push_back(columns_[cc.shard_column]);
      if (shown) client_description_ += columns_[cc.shard_column].description;
      continue;
    }
    Column c{cc.name, {}, oid::numeric, ValueType::numeric, {}};
    c.description = cc.name + '\0';
    protocol::put_be32(c.description, 0);  // no table
    protocol::put_be16(c.description, 0);
    protocol::put_be32(c.description, oid::numeric);
    protocol::put_be16(c.description, uint16_t(-1));  // variable length
    protocol::put_be32(c.description, uint32_t(-1));  // no type modifier
    protocol::put_be16(c.description, 0);             // text
    if (shown) client_description_ += c.description;
    client_columns_.push_back(std::move(c));
  }
}

bool ScatterMerge::parse_row(std::string_view body, Row& row) {
  if (body.size() < 2 || protocol::read_be16(body.data()) != columns_.size()) return false;
  row.assign(columns_.size(), std::nullopt);
  size_t pos = 2;
  for (auto& cell : row) {
    if (pos + 4 > body.size()) return false;
    uint32_t len = protocol::read_be32(body.data() + pos);
    pos += 4;
    if (len == uint32_t(-1)) continue;
    if (len > body.size() - pos) return false;
    cell.emplace(body.substr(pos, len));
    pos += len;
  }
  return pos == body.size();
}

// ORDER BY over client rows (without aggregates a client row is a shard row).
int ScatterMerge::compare_rows(const Row& a, const Row& b) {
  for (const SortKey& k : plan_.order_by) {
    const Cell& x = a[k.column];
    const Cell& y = b[k.column];
    int c = 0;
    if (!x || !y) {
      c = (!x && !y) ? 0 : (!x ? 1 : -1) * (k.nulls_first ? -1 : 1);
    } else {
      auto r = compare_values(client_columns_[k.column].type, *x, *y);
      if (!r) fail("a sort key value pgrouter cannot compare (dates must be in DateStyle ISO)");
      c = (r ? *r : 0) * (k.descending ? -1 : 1);
    }
    if (c) return c;
  }
  return 0;
}

std::string ScatterMerge::distinct_key(const Row& row) const {
  std::string key;
  for (size_t i = 0; i < row.size(); ++i) {
    if (!row[i]) {
      key += '\1';
      continue;
    }
    std::string v = normalized(client_columns_[i].type, *row[i]);
    protocol::put_be32(key, uint32_t(v.size()));
    key += v;
  }
  return key;
}

// Hidden columns stripped, then DISTINCT (over what the client sees), OFFSET and LIMIT, in PostgreSQL's
// order, then out.
void ScatterMerge::emit(Row row) {
  if (limit_reached_) return;
  row.resize(visible_);
  if (plan_.distinct && !seen_.insert(distinct_key(row)).second) return;
  std::string body;
  encode_row(row, body);
  emit_body(std::move(body));
}

void ScatterMerge::emit_body(std::string body) {
  if (limit_reached_) return;
  if (plan_.offset && skipped_ < *plan_.offset) {
    ++skipped_;
    return;
  }
  out_.push_back(std::move(body));
  ++sent_;
  if (plan_.limit && sent_ >= *plan_.limit) limit_reached_ = true;
}

bool ScatterMerge::needs(size_t shard) const {
  if (!error_.empty() || limit_reached_ || finished_[shard]) return false;
  return plan_.aggregate || plan_.order_by.empty() || queues_[shard].empty();
}

void ScatterMerge::add_row(size_t shard, std::string_view body) {
  if (!error_.empty() || limit_reached_ || finished_[shard]) return;
  if (!plan_.aggregate && plan_.order_by.empty() && !plan_.distinct && plan_.hidden == 0) {
    if (body.size() < 2 || protocol::read_be16(body.data()) != columns_.size())
      return fail("a malformed DataRow");
    return emit_body(std::string(body));  // nothing to compare or combine: straight through
  }
  Row row;
  if (!parse_row(body, row)) return fail("a malformed DataRow");
  if (plan_.aggregate) {
    std::string key;
    for (size_t j = 0; j < row.size(); ++j)
      if (plan_.columns[j].role == ColumnRole::group_key)
        key += (row[j] ? "\2" + normalized(columns_[j].type, *row[j]) : "\1") + '\0';
    auto [it, fresh] = group_index_.try_emplace(std::move(key), groups_.size());
    if (fresh)
      groups_.push_back({std::move(row)});
    else
      combine(groups_[it->second], row);
  } else if (!plan_.order_by.empty()) {
    queues_[shard].push_back(std::move(row));
    drain_ordered();
  } else {
    emit(std::move(row));
  }
}

void ScatterMerge::finish(size_t shard) {
  finished_[shard] = true;
  if (!error_.empty()) return;
  if (plan_.aggregate && std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; }))
    finish_aggregates();
  else if (!plan_.aggregate && !plan_.order_by.empty())
    drain_ordered();
}

// The k-way merge: a row goes out once every shard still sending has one waiting, so the smallest is known.
void ScatterMerge::drain_ordered() {
  while (!limit_reached_ && error_.empty()) {
    size_t best = shards_;
    for (size_t s = 0; s < shards_; ++s) {
      if (queues_[s].empty()) {
        if (!finished_[s]) return;
        continue;
      }
      if (best == shards_ || compare_rows(queues_[s].front(), queues_[best].front()) < 0) best = s;
    }
    if (best == shards_) return;
    Row row = std::move(queues_[best].front());
    queues_[best].pop_front();
    emit(std::move(row));
  }
}

bool ScatterMerge::next_row(std::string& body) {
  if (out_.empty()) return false;
  body = std::move(out_.front());
  out_.pop_front();
  return true;
}

bool ScatterMerge::done() const {
  if (!error_.empty() || limit_reached_) return true;
  if (!std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; })) return false;
  return std::all_of(queues_.begin(), queues_.end(), [](const auto& q) { return q.empty(); });
}

void ScatterMerge::combine(Group& g, const Row& row) {
  for (size_t j = 0; j < row.size() && error_.empty(); ++j) combine_cell(j, g.cells[j], row[j]);
}

// Folds one shard's partial aggregate `v` into `acc`; a NULL partial (no rows, or only NULL inputs) adds
// nothing, as the aggregate itself would skip it.
void ScatterMerge::combine_cell(size_t j, Cell& acc, const Cell& v) {
  ColumnRole role = plan_.columns[j].role;
  if (role == ColumnRole::plain || role == ColumnRole::group_key || !v) return;
  if (!acc) {
    acc = v;
    return;
  }
  if (is_count(role)) {
    auto a = parse_int(*acc), b = parse_int(*v);
    int64_t r = 0;
    if (!a || !b || __builtin_add_overflow(*a, *b, &r)) return fail("a count pgrouter cannot add");
    acc = std::to_string(r);
  } else if (is_sum(role)) {
    auto r = numeric_add(*acc, *v);
    if (!r) return fail("a sum pgrouter cannot add");
    if (columns_[j].type_oid == oid::int8 && !parse_int(*r)) return fail("bigint out of range");
    acc = std::move(*r);
  } else if (role == ColumnRole::min || role == ColumnRole::max) {
    auto c = compare_values(columns_[j].type, *v, *acc);
    if (!c) return fail("a min/max value pgrouter cannot compare (dates must be in DateStyle ISO)");
    if ((role == ColumnRole::min && *c < 0) || (role == ColumnRole::max && *c > 0)) acc = v;
  } else if (role == ColumnRole::bool_or) {
    if (*v == "t") acc = v;
  } else if (*v == "f") {  // bool_and, every
    acc = v;
  }
}

// HAVING's comparison of a client value with a constant; NULL fails it, as in SQL. Text compares bytewise,
// so only = and <> are accepted for it (check_types).
bool ScatterMerge::having_holds(const Row& row) {
  for (const HavingTerm& h : plan_.having) {
    const Cell& v = row[h.column];
    if (!v) return false;
    ValueType t = client_columns_[h.column].type;
    auto c = compare_values(t == ValueType::integer ? ValueType::numeric : t, *v, h.constant);
    if (!c) {
      fail("a HAVING constant pgrouter cannot compare");
      return false;
    }
    bool holds = h.op == "<"    ? *c < 0
                 : h.op == "<=" ? *c <= 0
                 : h.op == "="  ? *c == 0
                 : h.op == "<>" ? *c != 0
                 : h.op == ">"  ? *c > 0
                                : *c >= 0;
    if (!holds) return false;
  }
  return true;
}

// Every shard has answered: the groups become client rows, then HAVING, DISTINCT, ORDER BY, OFFSET, LIMIT.
void ScatterMerge::finish_aggregates() {
  if (aggregated_) return;
  aggregated_ = true;
  bool grouped = std::any_of(plan_.columns.begin(), plan_.columns.end(),
                             [](const ShardColumn& c) { return c.role == ColumnRole::group_key; });
  if (groups_.empty() && !grouped) {  // a global aggregate has one row even over no rows
    Group g{Row(columns_.size())};
    for (size_t j = 0; j < columns_.size(); ++j)
      if (is_count(plan_.columns[j].role)) g.cells[j] = "0";
    groups_.push_back(std::move(g));
  }
  std::vector<Row> rows;
  rows.reserve(groups_.size());
  for (Group& g : groups_) {
    Row row;
    for (const ClientColumn& cc : plan_.client_columns) {
      Cell& cell = row.emplace_back(std::move(g.cells[cc.shard_column]));
      if (!cc.avg) continue;
      const Cell& count = g.cells[cc.shard_column + 1];
      auto n = count ? parse_int(*count) : std::nullopt;
      if (!cell || !n || *n == 0) {
        cell.reset();
      } else {
        cell = numeric_avg(*cell, *n);
        if (!cell) return fail("an avg pgrouter cannot compute");
      }
    }
    rows.push_back(std::move(row));
  }
  groups_.clear();
  group_index_.clear();
  if (!plan_.having.empty()) std::erase_if(rows, [this](const Row& row) { return !having_holds(row); });
  if (!plan_.order_by.empty())
    std::stable_sort(rows.begin(), rows.end(),
                     [this](const Row& a, const Row& b) { return compare_rows(a, b) < 0; });
  for (Row& row : rows) emit(std::move(row));
}

}  // namespace pgrouter::sharding
