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
#include <string_view>

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace tipd::api {

// Appends `message` as JSON to *out and returns true, or returns false with
// *out unchanged when protobuf's printer must render it.
bool FastToJson(const google::protobuf::Message& message, std::string* out);

// Parses `json` into *out (cleared first) and returns true when the text is
// in the subset it reads exactly as protobuf's parser with ParseJson's options
// would (objects of known fields by proto or JSON name, each once; strings
// with JSON escapes; integers in plain decimal, bare or quoted; booleans;
// nested messages, repeated fields and string maps); otherwise returns false
// with *out cleared, and the caller asks protobuf's parser, which also words
// every error. Only reads API request types: enums, bytes, floats, nulls and
// anything unusual take the slow path.
bool FastFromJson(std::string_view json, google::protobuf::Message* out);

// Whether FastToJson renders messages of this type (the answer is cached).
bool FastJsonSupports(const google::protobuf::Descriptor* type);

}  // namespace tipd::api
