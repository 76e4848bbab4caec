// A direct JSON printer for the API's protobuf messages.
//
// protobuf's MessageToJsonString (3.21) serializes the message to binary and
// converts that back through a type resolver: for a tip's answer it is most
// of the work pool's time. FastToJson walks the message by reflection and
// writes the same bytes ToJson's options produce (proto field names, primitive
// fields always printed) in one pass. It renders only what it renders exactly
// like protobuf, and says so: a message type holding floats, doubles, maps,
// groups or well-known types, or a string that is not valid UTF-8, is left to
// protobuf's printer. tests/unit/api/json_fast_test.cc holds it to
// byte-equality with protobuf over every API message type and every Unicode
// code point.

#pragma once

#include <string>

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace tipd::api {

// Appends `message` as JSON to *out and returns true, or returns false with
// *out unchanged when protobuf's printer must render it.
bool FastToJson(const google::protobuf::Message& message, std::string* out);

// Whether FastToJson renders messages of this type (the answer is cached).
bool FastJsonSupports(const google::protobuf::Descriptor* type);

}  // namespace tipd::api
