// The one way pgrouter includes Boost.Asio: Boost 1.74's awaitable.hpp misses <utility> under g++ 12.
#pragma once
#include <utility>
#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace pgrouter {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
template <typename T = void>
using awaitable = asio::awaitable<T>;
using asio::use_awaitable;
}  // namespace pgrouter
