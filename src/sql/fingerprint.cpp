// Statement fingerprints and normalized texts for the slow-query log, by libpg_query.
#include "pgrouter/sql/fingerprint.hpp"

#include <pg_query.h>

namespace pgrouter::sql {

StatementDigest digest_statement(std::string_view text) {
  std::string owned(text);  // libpg_query reads a NUL-terminated string
  StatementDigest out;
  PgQueryFingerprintResult fp = pg_query_fingerprint(owned.c_str());
  if (!fp.error && fp.fingerprint_str) out.fingerprint = fp.fingerprint_str;
  pg_query_free_fingerprint_result(fp);
  if (out.fingerprint.empty()) return out;
  PgQueryNormalizeResult norm = pg_query_normalize(owned.c_str());
  if (!norm.error && norm.normalized_query) out.normalized = norm.normalized_query;
  pg_query_free_normalize_result(norm);
  return out;
}

}  // namespace pgrouter::sql
