// The static recovery export (GET /v1/recovery, `tipctl export-recovery`)
// turned back into a data dir when the database is lost entirely
// (`tipd restore --recovery FILE`, docs/operator-guide.md "Backups and
// recovery").
//
// The export holds, per open or closing channel, its parameters and the
// newest proofs of both directions (ours and the peer's), and the peers'
// addresses. From it this builds the records a node needs to rebuild each
// channel as if it had been restored from a backup taken at the export:
// the channel record (marked restored_awaiting_peer), both directions' latest
// proofs and tip counts (no tip history), and the persistent peers. At the
// first reestablish the node adopts anything newer the peer shows (our own
// proofs; the peer's newest proof as evidence), then closes or continues.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "crypto/crypto.h"
#include "tipd/api.pb.h"
#include "util/status.h"

namespace tipd::node {

// Parses a recovery export (JSON). kInvalidArgument naming what is wrong.
Result<v1::RecoveryExport> ParseRecoveryExport(const std::string& json);

// The database records (in key order) that `export_` describes. Checks that
// it is this node's (kPermissionDenied otherwise) and that every proof is
// signed by the side it claims, names its channel and chain (kInvalidArgument
// otherwise): a forged export cannot make the node claim what it was not paid.
Result<std::vector<std::pair<std::string, std::string>>> RecoveryRecords(
    const v1::RecoveryExport& export_, const crypto::KeyPair& node_key);

}  // namespace tipd::node
