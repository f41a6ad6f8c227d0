// The built-in function lists the classifier consults (see the header). Both are sorted at compile time and
// searched by bisection; names are as PostgreSQL stores them (lower case).
#include "pgrouter/sql/builtin_functions.hpp"

#include <algorithm>
#include <array>

namespace pgrouter::sql {
namespace {

template <size_t N>
constexpr std::array<std::string_view, N> sorted(std::array<std::string_view, N> names) {
  std::sort(names.begin(), names.end());
  return names;
}

// Must run on the primary. Beyond the writers: currval/lastval and exported snapshots only mean something on the
// server where nextval/pg_export_snapshot ran, the WAL-position functions fail on a standby, and replication
// slots, origins and statistics resets are per server (the primary is the one clients mean).
constexpr auto primary_only_names = sorted(std::to_array<std::string_view>({
    "brin_desummarize_range", "brin_summarize_new_values", "brin_summarize_range", "currval", "gin_clean_pending_list",
    "lastval", "loread", "lowrite", "nextval", "pg_backup_start", "pg_backup_stop", "pg_cancel_backend",
    "pg_copy_logical_replication_slot", "pg_copy_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot", "pg_create_restore_point", "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn", "pg_current_wal_lsn", "pg_current_xact_id", "pg_drop_replication_slot",
    "pg_export_snapshot", "pg_file_rename", "pg_file_sync", "pg_file_unlink", "pg_file_write",
    "pg_import_system_collations", "pg_log_backend_memory_contexts", "pg_logical_emit_message",
    "pg_logical_slot_get_binary_changes", "pg_logical_slot_get_changes", "pg_logical_slot_peek_binary_changes",
    "pg_logical_slot_peek_changes", "pg_notify", "pg_promote", "pg_reload_conf", "pg_replication_origin_advance",
    "pg_replication_origin_create", "pg_replication_origin_drop", "pg_replication_origin_session_reset",
    "pg_replication_origin_session_setup", "pg_replication_origin_xact_reset", "pg_replication_origin_xact_setup",
    "pg_replication_slot_advance", "pg_rotate_logfile", "pg_start_backup", "pg_stat_reset",
    "pg_stat_reset_replication_slot", "pg_stat_reset_shared", "pg_stat_reset_single_function_counters",
    "pg_stat_reset_single_table_counters", "pg_stat_reset_slru", "pg_stat_reset_subscription_stats",
    "pg_stop_backup", "pg_switch_wal", "pg_terminate_backend", "pg_wal_replay_pause", "pg_wal_replay_resume",
    "pg_walfile_name", "pg_walfile_name_offset", "set_config", "setval", "txid_current",
}));

// Families named by prefix: every advisory lock function (session and transaction level, try and unlock
// variants: a lock only means something where all clients take it) and every large-object function.
constexpr std::array<std::string_view, 3> primary_only_prefixes = {"lo_", "pg_advisory_", "pg_try_advisory_"};

// Common built-ins that neither write nor depend on where earlier statements ran. A schema-qualified
// pg_catalog call needs no entry here; this list is for the unqualified spelling applications use.
constexpr auto read_only_names = sorted(std::to_array<std::string_view>({
    // aggregates and window functions
    "any_value", "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "corr", "count",
    "covar_pop", "covar_samp", "cume_dist", "dense_rank", "every", "first_value", "json_agg", "json_object_agg",
    "jsonb_agg", "jsonb_object_agg", "lag", "last_value", "lead", "max", "min", "mode", "nth_value", "ntile",
    "percent_rank", "percentile_cont", "percentile_disc", "range_agg", "range_intersect_agg", "rank",
    "regr_avgx", "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy",
    "regr_syy", "row_number", "stddev", "stddev_pop", "stddev_samp", "string_agg", "sum", "var_pop", "var_samp",
    "variance", "xmlagg",
    // mathematics
    "abs", "acos", "acosd", "acosh", "asin", "asind", "asinh", "atan", "atan2", "atan2d", "atand", "atanh",
    "cbrt", "ceil", "ceiling", "cos", "cosd", "cosh", "cot", "cotd", "degrees", "div", "exp", "factorial",
    "floor", "gcd", "lcm", "ln", "log", "log10", "min_scale", "mod", "pi", "pow", "power", "radians", "random",
    "round", "scale", "sign", "sin", "sind", "sinh", "sqrt", "tan", "tand", "tanh", "trim_scale", "trunc",
    "width_bucket",
    // strings and bytes
    "ascii", "bit_count", "bit_length", "btrim", "char_length", "character_length", "chr", "concat", "concat_ws",
    "convert", "convert_from", "convert_to", "decode", "encode", "format", "get_bit", "get_byte", "initcap",
    "left", "length", "lower", "lpad", "ltrim", "md5", "normalize", "octet_length", "overlay", "parse_ident",
    "position", "quote_ident", "quote_literal", "quote_nullable", "regexp_count", "regexp_instr", "regexp_like",
    "regexp_match", "regexp_matches", "regexp_replace", "regexp_split_to_array", "regexp_split_to_table",
    "regexp_substr", "repeat", "replace", "reverse", "right", "rpad", "rtrim", "set_bit", "set_byte", "sha224",
    "sha256", "sha384", "sha512", "split_part", "starts_with", "string_to_array", "string_to_table", "strpos",
    "substr", "substring", "to_ascii", "to_hex", "translate", "unistr", "upper",
    // date and time
    "age", "clock_timestamp", "date_bin", "date_part", "date_trunc", "extract", "isfinite", "justify_days",
    "justify_hours", "justify_interval", "make_date", "make_interval", "make_time", "make_timestamp",
    "make_timestamptz", "now", "statement_timestamp", "timeofday", "timezone", "to_char", "to_date", "to_number",
    "to_timestamp", "transaction_timestamp",
    // set-returning and arrays
    "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_ndims",
    "array_position", "array_positions", "array_prepend", "array_remove", "array_replace", "array_to_string",
    "array_upper", "cardinality", "generate_series", "generate_subscripts", "trim_array", "unnest",
    // JSON
    "array_to_json", "json_array_element", "json_array_element_text", "json_array_elements",
    "json_array_elements_text", "json_array_length", "json_build_array", "json_build_object", "json_each",
    "json_each_text", "json_extract_path", "json_extract_path_text", "json_object", "json_object_keys",
    "json_populate_record", "json_populate_recordset", "json_strip_nulls", "json_to_record", "json_to_recordset",
    "json_typeof", "jsonb_array_element", "jsonb_array_element_text", "jsonb_array_elements",
    "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array", "jsonb_build_object", "jsonb_concat",
    "jsonb_contained", "jsonb_contains", "jsonb_delete", "jsonb_delete_path", "jsonb_each", "jsonb_each_text",
    "jsonb_exists", "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert", "jsonb_object",
    "jsonb_object_keys", "jsonb_path_exists", "jsonb_path_exists_tz", "jsonb_path_match", "jsonb_path_match_tz",
    "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_array_tz", "jsonb_path_query_first",
    "jsonb_path_query_first_tz", "jsonb_path_query_tz", "jsonb_populate_record", "jsonb_populate_recordset",
    "jsonb_pretty", "jsonb_set", "jsonb_set_lax", "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset",
    "jsonb_typeof", "row_to_json", "to_json", "to_jsonb",
    // ranges, geometry, network, text search, enums, UUIDs, XML
    "abbrev", "area", "box", "broadcast", "center", "circle", "daterange", "datemultirange", "diameter",
    "enum_first", "enum_last", "enum_range", "family", "gen_random_uuid", "height", "host", "hostmask",
    "inet_merge", "inet_same_family", "int4multirange", "int4range", "int8multirange", "int8range", "isclosed",
    "isempty", "isopen", "line", "lower_inc", "lower_inf", "lseg", "masklen", "multirange", "netmask", "network",
    "npoints", "nummultirange", "numrange", "path", "pclose", "phraseto_tsquery", "plainto_tsquery", "point",
    "polygon", "popen", "radius", "range_merge", "set_masklen", "setweight", "strip", "to_tsquery",
    "to_tsvector", "ts_headline", "ts_rank", "ts_rank_cd", "tsmultirange", "tsquery_phrase", "tsrange",
    "tstzmultirange", "tstzrange", "tsvector_to_array", "upper_inc", "upper_inf", "websearch_to_tsquery", "width",
    "xml_is_well_formed", "xml_is_well_formed_content", "xml_is_well_formed_document", "xmlcomment", "xpath",
    "xpath_exists",
    // type conversions spelled as calls
    "bool", "bpchar", "date", "float4", "float8", "inet", "int2", "int4", "int8", "interval", "numeric", "text",
    "time", "timestamp", "timestamptz", "to_regclass", "to_regcollation", "to_regnamespace", "to_regoper",
    "to_regoperator", "to_regproc", "to_regprocedure", "to_regrole", "to_regtype", "varchar",
    // session, server and catalog information
    "col_description", "current_database", "current_query", "current_schema", "current_schemas",
    "current_setting", "format_type", "has_any_column_privilege", "has_column_privilege",
    "has_database_privilege", "has_foreign_data_wrapper_privilege", "has_function_privilege",
    "has_language_privilege", "has_schema_privilege", "has_sequence_privilege", "has_server_privilege",
    "has_table_privilege", "has_tablespace_privilege", "has_type_privilege", "inet_client_addr",
    "inet_client_port", "inet_server_addr", "inet_server_port", "num_nonnulls", "num_nulls", "obj_description",
    "pg_backend_pid", "pg_blocking_pids", "pg_client_encoding", "pg_collation_for", "pg_column_compression",
    "pg_column_size", "pg_conf_load_time", "pg_current_snapshot", "pg_current_xact_id_if_assigned",
    "pg_database_size", "pg_function_is_visible", "pg_get_constraintdef", "pg_get_expr", "pg_get_function_arguments",
    "pg_get_function_identity_arguments", "pg_get_function_result", "pg_get_functiondef", "pg_get_indexdef",
    "pg_get_keywords", "pg_get_partkeydef", "pg_get_ruledef", "pg_get_serial_sequence", "pg_get_statisticsobjdef",
    "pg_get_triggerdef", "pg_get_userbyid", "pg_get_viewdef", "pg_get_wal_replay_pause_state", "pg_has_role",
    "pg_indexes_size", "pg_is_in_recovery", "pg_is_wal_replay_paused", "pg_jit_available",
    "pg_last_committed_xact", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn", "pg_last_xact_replay_timestamp",
    "pg_listening_channels", "pg_my_temp_schema", "pg_notification_queue_usage", "pg_partition_ancestors",
    "pg_partition_root", "pg_partition_tree", "pg_postmaster_start_time", "pg_relation_filenode",
    "pg_relation_filepath", "pg_relation_size", "pg_safe_snapshot_blocking_pids", "pg_size_bytes",
    "pg_size_pretty", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "pg_snapshot_xip", "pg_snapshot_xmax",
    "pg_snapshot_xmin", "pg_table_is_visible", "pg_table_size", "pg_tablespace_location", "pg_tablespace_size",
    "pg_total_relation_size", "pg_trigger_depth", "pg_type_is_visible", "pg_typeof", "pg_visible_in_snapshot",
    "pg_wal_lsn_diff", "pg_xact_commit_timestamp", "pg_xact_status", "row_security_active", "shobj_description",
    "txid_current_if_assigned", "txid_current_snapshot", "txid_snapshot_xip", "txid_snapshot_xmax",
    "txid_snapshot_xmin", "txid_status", "txid_visible_in_snapshot", "version",
}));

constexpr bool unique_names(const auto& names) {
  return std::adjacent_find(names.begin(), names.end()) == names.end();
}
static_assert(unique_names(primary_only_names) && unique_names(read_only_names));

bool contains(const auto& names, std::string_view name) {
  return std::binary_search(names.begin(), names.end(), name);
}

}  // namespace

BuiltinFunction builtin_function(std::string_view schema, std::string_view name) {
  if (!schema.empty() && schema != "pg_catalog") return BuiltinFunction::unknown;
  if (contains(primary_only_names, name)) return BuiltinFunction::primary_only;
  for (auto prefix : primary_only_prefixes)
    if (name.starts_with(prefix)) return BuiltinFunction::primary_only;
  if (!schema.empty() || contains(read_only_names, name)) return BuiltinFunction::read_only;
  return BuiltinFunction::unknown;
}

}  // namespace pgrouter::sql
