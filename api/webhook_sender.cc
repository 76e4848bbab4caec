// HttpWebhookSender: one POST per delivery over Boost.Beast, plain TCP or
// TLS through Asio's ssl::stream (api/webhooks.h).
//
// One delivery: resolve (within connect_timeout) -> check every address ->
// connect to the checked addresses only -> [TLS handshake, peer and host
// name verified] -> write -> read the status and at most
// max_response_bytes of body (all within response_timeout) -> close.
#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <utility>

#include "api/webhooks.h"

namespace tipd::api {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct HttpWebhookSender::Impl {
  Impl(net::io_context& io_in, HttpWebhookSenderOptions options_in)
      : io(io_in), options(std::move(options_in)), tls(net::ssl::context::tls_client) {}
  net::io_context& io;
  HttpWebhookSenderOptions options;
  net::ssl::context tls;
};

namespace {

bool IsIpLiteral(const std::string& host) {
  boost::system::error_code ec;
  (void)net::ip::make_address(host, ec);
  return !ec;
}

// Resolves a URL's host and checks every address it resolves to; hands the
// checked endpoints (or the refusal) to `done`, within `timeout`.
class ResolveCheck : public std::enable_shared_from_this<ResolveCheck> {
 public:
  using Done = std::function<void(tcp::resolver::results_type, std::optional<WebhookUrlError>)>;
  ResolveCheck(net::io_context& io, WebhookUrl url, bool allow_insecure_http, bool allow_private,
               std::chrono::milliseconds timeout, Done done)
      : resolver_(io),
        timer_(io),
        url_(std::move(url)),
        allow_insecure_http_(allow_insecure_http),
        allow_private_(allow_private),
        timeout_(timeout),
        done_(std::move(done)) {}

  void Start() {
    auto self = shared_from_this();
    timer_.expires_after(timeout_);
    timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) {
        self->timed_out_ = true;
        self->resolver_.cancel();
      }
    });
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        [self](const boost::system::error_code& ec, tcp::resolver::results_type results) {
          self->timer_.cancel();
          self->OnResolved(ec, std::move(results));
        });
  }

 private:
  void OnResolved(const boost::system::error_code& ec, tcp::resolver::results_type results) {
    if (ec || results.empty()) {
      const std::string why = timed_out_
                                  ? "no answer within " + std::to_string(timeout_.count()) + " ms"
                                  : ec.message();
      return done_({}, WebhookUrlError{kUnresolvedWebhookHost,
                                       "host '" + url_.host + "' does not resolve: " + why});
    }
    for (const auto& entry : results) {
      const net::ip::address address = entry.endpoint().address();
      if (auto reason = ForbiddenAddressReason(address, allow_private_)) {
        return done_({}, WebhookUrlError{kForbiddenWebhookAddress,
                                         "host '" + url_.host + "' resolves to " +
                                             address.to_string() + ", a " + *reason +
                                             " address (allowed only with config "
                                             "webhook-allow-private=true)"});
      }
      const bool loopback =
          address.is_loopback() ||
          (address.is_v6() && address.to_v6().is_v4_mapped() &&
           net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6()).is_loopback());
      if (!url_.https && !allow_insecure_http_ && !loopback) {
        return done_({}, WebhookUrlError{kInsecureWebhookUrl,
                                         "http:// is allowed only to loopback; host '" + url_.host +
                                             "' resolves to " + address.to_string() +
                                             " (use https://, or create the webhook with "
                                             "allow_insecure_http on a node configured with "
                                             "webhook-allow-insecure-http=true)"});
      }
    }
    done_(std::move(results), std::nullopt);
  }

  tcp::resolver resolver_;
  net::steady_timer timer_;
  const WebhookUrl url_;
  const bool allow_insecure_http_;
  const bool allow_private_;
  const std::chrono::milliseconds timeout_;
  Done done_;
  bool timed_out_ = false;
};

// One delivery.
class Delivery : public std::enable_shared_from_this<Delivery> {
 public:
  Delivery(std::shared_ptr<HttpWebhookSender::Impl> impl, WebhookHttpRequest request,
           std::function<void(WebhookHttpResult)> done)
      : impl_(std::move(impl)),
        request_(std::move(request)),
        done_(std::move(done)),
        plain_(impl_->io) {}

  void Start() {
    auto self = shared_from_this();
    auto check = std::make_shared<ResolveCheck>(
        impl_->io, request_.url, request_.allow_insecure_http, impl_->options.allow_private,
        impl_->options.connect_timeout,
        [self](tcp::resolver::results_type results, std::optional<WebhookUrlError> refusal) {
          if (refusal) {
            WebhookHttpResult r;
            r.error = refusal->message;
            r.refused_by_policy = refusal->code != kUnresolvedWebhookHost;
            return self->Finish(std::move(r));
          }
          self->Connect(std::move(results));
        });
    check->Start();
  }

 private:
  beast::tcp_stream& Lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : plain_; }

  void Connect(tcp::resolver::results_type results) {
    auto self = shared_from_this();
    if (request_.url.https) {
      tls_ = std::make_unique<net::ssl::stream<beast::tcp_stream>>(impl_->io, impl_->tls);
      tls_->set_verify_mode(net::ssl::verify_peer);
      tls_->set_verify_callback(net::ssl::host_name_verification(request_.url.host));
      if (!IsIpLiteral(request_.url.host) &&
          !SSL_set_tlsext_host_name(tls_->native_handle(), request_.url.host.c_str())) {
        return Finish(Failure("TLS: setting the server name failed"));
      }
    }
    Lowest().expires_after(impl_->options.connect_timeout);
    // Only the addresses ResolveCheck accepted: nothing is looked up again.
    Lowest().async_connect(
        results, [self](const boost::system::error_code& ec, const tcp::endpoint&) {
          if (ec) {
            return self->Finish(self->Failure(
                ec == beast::error::timeout
                    ? "connect: no answer within " +
                          std::to_string(self->impl_->options.connect_timeout.count()) + " ms"
                    : "connect: " + ec.message()));
          }
          self->Lowest().expires_after(self->impl_->options.response_timeout);
          if (self->tls_) {
            self->tls_->async_handshake(
                net::ssl::stream_base::client, [self](const boost::system::error_code& hec) {
                  if (hec)
                    return self->Finish(self->Failure("TLS handshake: " + self->Describe(hec)));
                  self->Write();
                });
          } else {
            self->Write();
          }
        });
  }

  void Write() {
    req_.method(http::verb::post);
    req_.target(request_.url.target);
    req_.version(11);
    const bool v6 = request_.url.host.find(':') != std::string::npos;
    std::string host = v6 ? "[" + request_.url.host + "]" : request_.url.host;
    const bool default_port = request_.url.port == (request_.url.https ? 443 : 80);
    if (!default_port) host += ":" + std::to_string(request_.url.port);
    req_.set(http::field::host, host);
    for (const auto& [name, value] : request_.headers) req_.set(name, value);
    req_.set(http::field::connection, "close");
    req_.body() = request_.body;
    req_.prepare_payload();
    parser_.body_limit(impl_->options.max_response_bytes);
    parser_.header_limit(16 * 1024);
    auto self = shared_from_this();
    auto on_write = [self](const boost::system::error_code& ec, size_t) {
      if (ec) return self->Finish(self->Failure("sending: " + self->Describe(ec)));
      self->Read();
    };
    if (tls_) {
      http::async_write(*tls_, req_, on_write);
    } else {
      http::async_write(plain_, req_, on_write);
    }
  }

  // The header first: a Content-Length over the limit is cut off at once,
  // without reading any of the body; otherwise the body, within the limit.
  void Read() {
    auto self = shared_from_this();
    auto on_header = [self](const boost::system::error_code& ec, size_t) {
      if (ec) return self->OnRead(ec);
      const auto length = self->parser_.content_length();
      if (length && *length > self->impl_->options.max_response_bytes) {
        return self->OnRead(http::error::body_limit);
      }
      auto on_read = [self](const boost::system::error_code& bec, size_t) { self->OnRead(bec); };
      if (self->tls_) {
        http::async_read(*self->tls_, self->buffer_, self->parser_, on_read);
      } else {
        http::async_read(self->plain_, self->buffer_, self->parser_, on_read);
      }
    };
    if (tls_) {
      http::async_read_header(*tls_, buffer_, parser_, on_header);
    } else {
      http::async_read_header(plain_, buffer_, parser_, on_header);
    }
  }

  void OnRead(const boost::system::error_code& ec) {
    WebhookHttpResult r;
    if (parser_.is_header_done()) r.status_code = static_cast<int>(parser_.get().result_int());
    if (ec == http::error::body_limit && parser_.is_header_done()) {
      // The status line counts; the rest of a huge body is not read.
      r.error = "response body over " + std::to_string(impl_->options.max_response_bytes) +
                " bytes, cut off";
      if (r.status_code < 200 || r.status_code >= 300) {
        r.error = "answered HTTP " + std::to_string(r.status_code) + "; " + r.error;
      }
      return Finish(std::move(r));
    }
    if (ec) {
      r.status_code = 0;
      r.error = "reading the answer: " + Describe(ec);
      return Finish(std::move(r));
    }
    if (r.status_code < 200 || r.status_code >= 300) {
      std::string body = parser_.get().body().substr(0, 200);
      for (char& c : body) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = ' ';
      }
      r.error =
          "answered HTTP " + std::to_string(r.status_code) + (body.empty() ? "" : ": ") + body;
    }
    Finish(std::move(r));
  }

  std::string Describe(const boost::system::error_code& ec) const {
    if (ec == beast::error::timeout) {
      return "no answer within " + std::to_string(impl_->options.response_timeout.count()) + " ms";
    }
    return ec.message();
  }

  WebhookHttpResult Failure(std::string error) const {
    WebhookHttpResult r;
    r.error = std::move(error);
    return r;
  }

  void Finish(WebhookHttpResult result) {
    if (finished_) return;
    finished_ = true;
    boost::system::error_code ignored;
    Lowest().socket().close(ignored);
    auto done = std::move(done_);
    done(std::move(result));
  }

  std::shared_ptr<HttpWebhookSender::Impl> impl_;
  WebhookHttpRequest request_;
  std::function<void(WebhookHttpResult)> done_;
  beast::tcp_stream plain_;
  std::unique_ptr<net::ssl::stream<beast::tcp_stream>> tls_;
  http::request<http::string_body> req_;
  http::response_parser<http::string_body> parser_;
  beast::flat_buffer buffer_;
  bool finished_ = false;
};

}  // namespace

Result<std::unique_ptr<HttpWebhookSender>> HttpWebhookSender::Create(
    net::io_context& io, HttpWebhookSenderOptions options) {
  auto impl = std::make_unique<Impl>(io, std::move(options));
  boost::system::error_code ec;
  impl->tls.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                            net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                            net::ssl::context::no_tlsv1_1,
                        ec);
  if (ec) return Status::Internal("TLS context options: " + ec.message());
  impl->tls.set_default_verify_paths(ec);
  if (ec) return Status::Internal("loading the system CA store: " + ec.message());
  if (!impl->options.ca_file.empty()) {
    impl->tls.load_verify_file(impl->options.ca_file.string(), ec);
    if (ec) {
      return Status::InvalidArgument("webhook-ca-file " + impl->options.ca_file.string() +
                                     ": cannot load certificates: " + ec.message());
    }
  }
  return std::unique_ptr<HttpWebhookSender>(new HttpWebhookSender(std::move(impl)));
}

HttpWebhookSender::HttpWebhookSender(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpWebhookSender::~HttpWebhookSender() = default;

void HttpWebhookSender::Send(WebhookHttpRequest request,
                             std::function<void(WebhookHttpResult)> done) {
  std::make_shared<Delivery>(impl_, std::move(request), std::move(done))->Start();
}

void HttpWebhookSender::CheckUrl(const WebhookUrl& url, bool allow_insecure_http,
                                 std::function<void(std::optional<WebhookUrlError>)> done) {
  auto check = std::make_shared<ResolveCheck>(
      impl_->io, url, allow_insecure_http, impl_->options.allow_private,
      impl_->options.connect_timeout,
      [done = std::move(done)](tcp::resolver::results_type,
                               std::optional<WebhookUrlError> refusal) { done(refusal); });
  check->Start();
}

}  // namespace tipd::api
