// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FLEML round attestations and acceptance
/// @notice Members who audited a finalized round (recomputed it with `fleml-node audit`) say on
///         chain whether it passed, with the hash and CID of their audit verdict. With the policy's
///         `attestationsRequired` k > 0, a finalized round is accepted once k members passed it,
///         or once its attestation window ends with fewer than k failing it (silence accepts, so
///         absent auditors cannot stall the consortium); a round k members failed can be
///         rejected while no later round has opened. The next round opens only on an accepted,
///         abandoned or rejected round and trains on the last accepted result. With k = 0 a
///         finalized round is accepted at once and attestations are a public record only.
/// @dev Per round: two packed counters in the round's record and one bitmap word per 256 member
///      indices (who attested). The audit verdicts themselves are on IPFS, named in the events.
interface IFlemlAttestations {
    /// @notice The member already attested this round.
    error AlreadyAttested(uint256 roundId, address member);
    /// @notice Attestations to a round that requires them count until its attestation deadline,
    ///         inclusive.
    error AttestationWindowClosed(uint256 roundId, uint64 attestationDeadline);
    /// @notice Rejection needs `attestationsRequired` (non-zero) failing attestations.
    error TooFewFailingAttestations(uint256 roundId, uint32 fails, uint16 attestationsRequired);
    /// @notice A later round opened: this round can no longer be rejected.
    error LaterRoundOpened(uint256 roundId, uint256 currentRound);
    /// @notice Until the round's attestation window ends, and for a round that is accepted (k
    ///         passing attestations), only the operator may reject it.
    error RejectionReservedToOperator(uint256 roundId, uint64 attestationDeadline);

    /// @notice A member attested a finalized round.
    /// @param roundId the round
    /// @param member the attesting member
    /// @param pass whether its audit passed the round
    /// @param auditHash sha256 of the audit verdict's bytes on IPFS
    /// @param auditCid IPFS CID of the audit verdict
    event RoundAttested(
        uint256 indexed roundId, address indexed member, bool pass, bytes32 auditHash, string auditCid
    );

    /// @notice A member's audit of a finalized round was inconclusive: an object a check needs
    ///         could not be fetched (nobody provided it), so the audit neither passes nor fails
    ///         the round. It counts as neither; the verdict on IPFS names the checks.
    /// @param roundId the round
    /// @param member the attesting member
    /// @param auditHash sha256 of the audit verdict's bytes on IPFS
    /// @param auditCid IPFS CID of the audit verdict
    event RoundAuditInconclusive(
        uint256 indexed roundId, address indexed member, bytes32 auditHash, string auditCid
    );

    /// @notice A finalized round was rejected: its result never counts, and the next round trains
    ///         on the last accepted model.
    /// @param roundId the round
    /// @param by the account that rejected it
    /// @param passes its passing attestations
    /// @param fails its failing attestations
    event RoundRejected(uint256 indexed roundId, address indexed by, uint32 passes, uint32 fails);

    /// @notice Attest the finalized round `roundId`: once per member per round, by an active
    ///         member (never the aggregator, who cannot be one); in a round that requires
    ///         attestations, until its `attestationDeadline` inclusive.
    /// @param roundId the finalized round
    /// @param pass whether the caller's audit passed the round
    /// @param auditHash sha256 of the audit verdict's bytes on IPFS (non-zero)
    /// @param auditCid IPFS CID of the audit verdict (1 to `MAX_CID_LENGTH` bytes)
    function attestRound(uint256 roundId, bool pass, bytes32 auditHash, string calldata auditCid)
        external;

    /// @notice Record that the caller's audit of the finalized round `roundId` was
    ///         inconclusive: it takes the member's one attestation of the round, under the same
    ///         rules as `attestRound`, and counts neither as a pass nor as a failure.
    /// @param roundId the finalized round
    /// @param auditHash sha256 of the audit verdict's bytes on IPFS (non-zero)
    /// @param auditCid IPFS CID of the audit verdict (1 to `MAX_CID_LENGTH` bytes)
    function attestInconclusive(uint256 roundId, bytes32 auditHash, string calldata auditCid)
        external;

    /// @notice Reject the finalized round `roundId`, which must be the latest round and have
    ///         `attestationsRequired` (non-zero) failing attestations: the operator at any time
    ///         (also when it has as many passing ones: a disputed round is the operator's call),
    ///         anyone once its attestation window ended and it is not accepted, so that a lost
    ///         operator key cannot stall the consortium.
    /// @param roundId the round
    function rejectRound(uint256 roundId) external;

    /// @notice Passing and failing attestations of a round.
    function attestations(uint256 roundId) external view returns (uint32 passes, uint32 fails);

    /// @notice Whether `member` attested round `roundId`.
    function hasAttested(uint256 roundId, address member) external view returns (bool);

    /// @notice Whether round `roundId` is finalized and accepted: k = 0, or k passing
    ///         attestations, or its attestation window ended with fewer than k failing ones.
    function isAccepted(uint256 roundId) external view returns (bool);

    /// @notice The latest accepted round (0 if none): the round whose result the next round
    ///         trains on.
    function lastAcceptedRound() external view returns (uint256);
}
