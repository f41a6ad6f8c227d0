// Buffer memory management for the framing layer (the scanner itself is a header template).
#include "pgrouter/protocol/codec.hpp"

#include <algorithm>

namespace pgrouter::protocol {

void Buffer::reserve_message(size_t total) {
  if (!mem_) {
    cap_ = std::max(initial_, total + 1024);
    mem_ = std::make_unique_for_overwrite<char[]>(cap_);
    return;
  }
  // Bytes from `base` on are kept: the unread ones, and those consumed since a mark.
  size_t base = marked_ ? mark_ : head_;
  size_t kept = tail_ - base, behind = head_ - base;
  if (head_ + total <= cap_ && tail_ < cap_) return;
  if (behind + total < cap_ && kept < cap_) {  // compacting is enough
    std::memmove(mem_.get(), mem_.get() + base, kept);
  } else {
    size_t ncap = std::max(cap_ * 2, behind + total + 1024);
    auto nmem = std::make_unique_for_overwrite<char[]>(ncap);
    std::memcpy(nmem.get(), mem_.get() + base, kept);
    mem_ = std::move(nmem);
    cap_ = ncap;
  }
  mark_ = 0;
  head_ = behind;
  tail_ = kept;
}

void Buffer::prepare_read() {
  if (!mem_) {
    cap_ = initial_;
    mem_ = std::make_unique_for_overwrite<char[]>(cap_);
    return;
  }
  // Drained (and no mark keeps consumed bytes): start over at the front.
  if (!marked_ && head_ == tail_) head_ = tail_ = 0;
  // Too little room at the tail (a mark keeps bytes, or unread bytes sit near the end): compact or grow
  // first, or the next read returns a sliver of a message (a 5-byte header read alone would leave the router
  // an empty batch to classify).
  constexpr size_t kMinRead = 512;
  if (cap_ - tail_ >= std::min(kMinRead, cap_)) return;
  reserve_message(size() + std::min(kMinRead, cap_));
}

void Buffer::shrink(bool release_all) {
  if (!empty() || marked_) return;
  if (release_all) {
    mem_.reset();
    cap_ = 0;
  } else if (cap_ > initial_) {
    mem_ = std::make_unique_for_overwrite<char[]>(initial_);
    cap_ = initial_;
  }
  head_ = tail_ = 0;
}

}  // namespace pgrouter::protocol
