// Buffer memory management for the framing layer (the scanner itself is a header template).
#include "pgrouter/protocol/codec.hpp"

#include <algorithm>

namespace pgrouter::protocol {

void Buffer::reserve_message(size_t total) {
  if (!mem_) {
    cap_ = std::max(initial_, total + 1024);
    mem_ = std::make_unique<char[]>(cap_);
    return;
  }
  size_t live = size();
  if (head_ + total <= cap_ && head_ + live < cap_) return;
  if (total < cap_ && live < cap_) {  // compacting is enough
    std::memmove(mem_.get(), mem_.get() + head_, live);
  } else {
    size_t ncap = std::max(cap_ * 2, total + 1024);
    auto nmem = std::make_unique<char[]>(ncap);
    std::memcpy(nmem.get(), mem_.get() + head_, live);
    mem_ = std::move(nmem);
    cap_ = ncap;
  }
  head_ = 0;
  tail_ = live;
}

void Buffer::prepare_read() {
  if (!mem_) {
    cap_ = initial_;
    mem_ = std::make_unique<char[]>(cap_);
    return;
  }
  if (tail_ < cap_) return;
  // Full at the tail: move live bytes to the front, or grow when they fill the whole buffer.
  reserve_message(size() + 1);
}

void Buffer::shrink(bool release_all) {
  if (!empty()) return;
  if (release_all) {
    mem_.reset();
    cap_ = 0;
  } else if (cap_ > initial_) {
    mem_ = std::make_unique<char[]>(initial_);
    cap_ = initial_;
  }
  head_ = tail_ = 0;
}

}  // namespace pgrouter::protocol
