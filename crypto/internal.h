// Helpers shared by the crypto/ implementation files. Not part of the public
// API: nothing outside crypto/ includes this header.
#pragma once

namespace tipd::crypto::internal {

// Aborts the process with `what` on stderr unless `ok`. For failures that can
// only mean a broken library or our own bug (never for outside input), where
// continuing could leak or misuse secrets. Unlike assert, it is never compiled
// out.
void Check(bool ok, const char* what);

}  // namespace tipd::crypto::internal
