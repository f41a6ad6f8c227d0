/* What CMake's generate_export_header() writes for prometheus-cpp-core, reduced to a static library: the
 * meson overlay builds only that, with PROMETHEUS_CPP_CORE_STATIC_DEFINE, so every export macro is empty. */
#ifndef PROMETHEUS_CPP_CORE_EXPORT_H
#define PROMETHEUS_CPP_CORE_EXPORT_H

#define PROMETHEUS_CPP_CORE_EXPORT
#define PROMETHEUS_CPP_CORE_NO_EXPORT
#define PROMETHEUS_CPP_CORE_DEPRECATED __attribute__((__deprecated__))
#define PROMETHEUS_CPP_CORE_DEPRECATED_EXPORT PROMETHEUS_CPP_CORE_DEPRECATED
#define PROMETHEUS_CPP_CORE_DEPRECATED_NO_EXPORT PROMETHEUS_CPP_CORE_DEPRECATED

#endif /* PROMETHEUS_CPP_CORE_EXPORT_H */
