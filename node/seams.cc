#include "node/seams.h"

#include <boost/asio/steady_timer.hpp>

namespace tipd::node {

std::optional<crypto::PublicKey> HostTransport::PeerKey(p2p::PeerId peer) const {
  auto info = host_.GetPeer(peer);
  if (!info) return std::nullopt;
  return info->node_id;
}

struct AsioTimers::Entry {
  explicit Entry(boost::asio::io_context& io) : timer(io) {}
  boost::asio::steady_timer timer;
};

AsioTimers::AsioTimers(boost::asio::io_context& io) : io_(io) {}

AsioTimers::~AsioTimers() {
  *alive_ = false;
  for (auto& [id, e] : timers_) e->timer.cancel();
}

Timers::Id AsioTimers::After(std::chrono::milliseconds delay, std::function<void()> fn) {
  const Id id = next_id_++;
  auto entry = std::make_shared<Entry>(io_);
  entry->timer.expires_after(delay);
  entry->timer.async_wait(
      [this, alive = alive_, id, entry, fn = std::move(fn)](const boost::system::error_code& ec) {
        if (ec || !*alive) return;
        auto it = timers_.find(id);
        if (it == timers_.end() || it->second != entry) return;  // cancelled
        timers_.erase(it);
        fn();
      });
  timers_.emplace(id, std::move(entry));
  return id;
}

void AsioTimers::Cancel(Id id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  it->second->timer.cancel();
  timers_.erase(it);
}

size_t HostTransport::SendRoom(p2p::PeerId peer) const {
  auto stats = host_.Stats(peer);
  if (!stats) return 0;
  return stats->send_queue_messages >= max_send_queue_
             ? 0
             : max_send_queue_ - stats->send_queue_messages;
}

}  // namespace tipd::node
