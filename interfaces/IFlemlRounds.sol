// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FLEML training rounds (protocol version 2)
/// @notice The round state machine: the aggregator opens a round on a global model, members commit
///         one update each before the deadline, the aggregator closes the round and finalizes it
///         with the new global model, the round report and the set of flagged members. A round
///         that cannot be finalized in time is abandoned. With attestations required
///         (`IFlemlAttestations`), a finalized round must also be accepted, and one that members'
///         audits fail can be rejected. The next round trains on the last accepted model.
/// @dev Content hashes are sha256 of the exact bytes stored on IPFS (see fleml_node.storage).
///      Storage keeps what the chain reads: each round's hashes and counters, each member's latest
///      commitment and the flagged bits. Every commitment ever made, and the CIDs and flagged
///      bitmaps, are in events (`UpdateSubmitted` is indexed by round and member). Every round
///      event indexes the round id as its first topic.
interface IFlemlRounds {
    /// @notice Lifecycle of a round. `None` means the round does not exist. A `Rejected` round
    ///         was finalized, then failed by its attesters (`IFlemlAttestations.rejectRound`).
    enum RoundStatus {
        None,
        Open,
        Closed,
        Finalized,
        Abandoned,
        Rejected
    }

    /// @notice What storage says about a member's commitment in a round (`verifyCommitment`).
    enum CommitmentStatus {
        NotSubmitted, // the member did not submit (or reveal) an update in the round
        Matches, // it submitted exactly the hash asked about
        Differs, // it submitted another hash
        Superseded // it submitted to a later round since: storage no longer says whether or
            // what it submitted here; read the round's `UpdateSubmitted` events
    }

    /// @notice A round's on-chain record.
    /// @dev `deadline` to `attestationsRequired` share one storage slot, `revealDeadline` to
    ///      `attestationDeadline` a second; `attestationWindow` has a third, written only when
    ///      attestations are required. Every event of round r lies in blocks `openedBlock` of r
    ///      to `openedBlock` of r + 1 (a round opens only after the previous one is finalized
    ///      (and accepted), abandoned or rejected), except the attestations of r and its
    ///      rejection, which may come later: read `RoundAttested` and `RoundRejected` by round id.
    struct Round {
        bytes32 modelHash; // hash of the global model the round trains on
        bytes32 resultHash; // hash of the new global model (set at finalization)
        bytes32 reportHash; // hash of the round report (set at finalization)
        uint64 deadline; // unix seconds; updates (commitments) are accepted until then, inclusive
        uint32 quorum; // submissions that allow closing early
        uint32 submissions; // updates submitted (commit-reveal: revealed) so far
        RoundStatus status;
        uint64 openedBlock; // block that opened the round: its events start there
        uint32 minSubmissions; // a result needs at least this many submissions (fixed at opening)
        uint8 mode; // 0 plain, 1 commit-reveal (the policy's, at opening)
        uint16 attestationsRequired; // k (the policy's, at opening); 0: accepted when finalized
        uint64 revealDeadline; // commit-reveal: reveals until then, inclusive; 0 in plain mode
        uint32 commits; // commit-reveal: commitments made; 0 in plain mode
        uint32 graceSeconds; // after deadline (reveal deadline): anyone may then abandon
        uint32 passes; // passing attestations of the finalized round
        uint32 fails; // failing attestations of the finalized round
        uint64 attestationDeadline; // k > 0: finalization time + window; 0 before finalization
        uint32 attestationWindow; // k > 0: the policy's attestation window, at opening
    }

    /// @notice The caller is not the aggregator.
    error NotAggregator(address account);
    /// @notice No round with this id exists.
    error UnknownRound(uint256 roundId);
    /// @notice The round is not in the status the call needs.
    error WrongRoundStatus(uint256 roundId, RoundStatus status, RoundStatus required);
    /// @notice A new round can only open once the previous one is finalized, abandoned or
    ///         rejected.
    error PreviousRoundNotFinalized(uint256 roundId);
    /// @notice The previous round is finalized but not accepted yet: it needs
    ///         `attestationsRequired` passing attestations, or the end of its attestation window
    ///         (`attestationDeadline`) with fewer failing ones; with that many failing ones it can
    ///         only be rejected.
    error PreviousRoundNotAccepted(
        uint256 roundId,
        uint32 passes,
        uint32 fails,
        uint16 attestationsRequired,
        uint64 attestationDeadline
    );
    /// @notice The deadline must lie between the policy's shortest and longest round from now.
    error DeadlineOutOfRange(uint64 deadline, uint256 earliest, uint256 latest);
    /// @notice The submission (commit) deadline of the round has passed.
    error DeadlinePassed(uint256 roundId, uint64 deadline);
    /// @notice Quorum must be between the round's minimum submissions (at least 1) and the
    ///         number of active members.
    error InvalidQuorum(uint32 quorum, uint32 minSubmissions, uint32 activeMembers);
    /// @notice The member already submitted (revealed) an update in this round.
    error AlreadySubmitted(uint256 roundId, address member);
    /// @notice A content hash (or commitment) of zero is not a commitment.
    error EmptyHash();
    /// @notice A CID must not be empty.
    error EmptyCid();
    /// @notice A CID must not be longer than `MAX_CID_LENGTH` bytes.
    error CidTooLong(uint256 length, uint256 maxLength);
    /// @notice The round cannot close yet: below quorum and before the deadline.
    error QuorumNotReached(uint256 roundId, uint32 submissions, uint32 quorum);
    /// @notice A round must train on the last accepted model (before any: round 1's model).
    error ModelNotPreviousResult(bytes32 modelHash, bytes32 previousResult);
    /// @notice The flagged bitmap sets a bit at or above the number of member slots.
    error UnknownMemberFlagged(uint256 lastWord, uint256 memberSlots);
    /// @notice The flagged bitmap has more words than there are member slots.
    error BitmapTooLong(uint256 words, uint256 maxWords);
    /// @notice A flagged bit names a member that did not submit (reveal) an update in the round.
    error FlaggedNonSubmitter(uint256 roundId, uint256 index);
    /// @notice A result needs at least the round's minimum submissions; this round can only be
    ///         abandoned.
    error BelowMinimumSubmissions(uint256 roundId, uint32 submissions, uint32 minSubmissions);
    /// @notice The call belongs to the other submission mode (0 plain, 1 commit-reveal).
    error WrongSubmissionMode(uint256 roundId, uint8 mode);
    /// @notice The member already committed in this round.
    error AlreadyCommitted(uint256 roundId, address member);
    /// @notice The member made no commitment in this round.
    error NoCommitment(uint256 roundId, address member);
    /// @notice The revealed hash and salt do not match the member's commitment.
    error CommitmentMismatch(uint256 roundId, address member);
    /// @notice Reveals start after the (commit) deadline.
    error RevealNotOpen(uint256 roundId, uint64 deadline);
    /// @notice The reveal window has ended.
    error RevealWindowClosed(uint256 roundId, uint64 revealDeadline);
    /// @notice A commit-reveal round cannot close before its (commit) deadline.
    error CommitPhaseOpen(uint256 roundId, uint64 deadline);
    /// @notice A commit-reveal round closes after its deadline: first when every commitment is
    ///         revealed and the quorum is reached, at the latest after the reveal deadline.
    error RevealsPending(uint256 roundId, uint32 commits, uint32 submissions);
    /// @notice Only an open or closed round can be abandoned.
    error RoundNotAbandonable(uint256 roundId, RoundStatus status);
    /// @notice Before `abandonableAfter`, only the operator may abandon a round that can still
    ///         reach its minimum submissions.
    error GracePeriodNotOver(uint256 roundId, uint256 abandonableAfter);

    /// @notice A round opened on a global model.
    /// @param roundId the round's id (1, 2, ...)
    /// @param modelHash content hash of the global model
    /// @param aggregator the aggregator that opened it
    /// @param modelCid IPFS CID of the global model
    /// @param deadline last second (unix time) at which updates (commitments) are accepted
    /// @param quorum submissions that allow closing early
    /// @param minSubmissions submissions a result needs
    /// @param mode 0 plain, 1 commit-reveal
    /// @param revealDeadline commit-reveal: last second of the reveal window (0 in plain mode)
    event RoundOpened(
        uint256 indexed roundId,
        bytes32 indexed modelHash,
        address indexed aggregator,
        string modelCid,
        uint64 deadline,
        uint32 quorum,
        uint32 minSubmissions,
        uint8 mode,
        uint64 revealDeadline
    );

    /// @notice A member submitted (plain) or revealed (commit-reveal) its update for a round.
    /// @param roundId the round
    /// @param member the member's account
    /// @param updateHash content hash of the update's bytes on IPFS
    /// @param updateCid IPFS CID of the update
    event UpdateSubmitted(
        uint256 indexed roundId, address indexed member, bytes32 updateHash, string updateCid
    );

    /// @notice A member committed to an update it will reveal after the deadline.
    /// @param roundId the round
    /// @param member the member's account
    /// @param commitment `commitmentOf(member, roundId, updateHash, salt)`
    event UpdateCommitted(uint256 indexed roundId, address indexed member, bytes32 commitment);

    /// @notice The round stopped accepting updates.
    /// @param roundId the round
    /// @param aggregator the aggregator that closed it
    /// @param submissions the number of submitted (revealed) updates
    /// @param quorumReached whether the quorum was reached
    event RoundClosed(
        uint256 indexed roundId, address indexed aggregator, uint32 submissions, bool quorumReached
    );

    /// @notice The round's result was committed; it can never change.
    /// @param roundId the round
    /// @param resultHash content hash of the new global model
    /// @param aggregator the aggregator that finalized it
    /// @param resultCid IPFS CID of the new global model
    /// @param reportHash content hash of the round report
    /// @param reportCid IPFS CID of the round report
    /// @param flaggedBitmap bit i of word i/256 set when the member with index i was rejected or flagged
    event RoundFinalized(
        uint256 indexed roundId,
        bytes32 indexed resultHash,
        address indexed aggregator,
        string resultCid,
        bytes32 reportHash,
        string reportCid,
        uint256[] flaggedBitmap
    );

    /// @notice The round was abandoned: it has no result and the next round trains on the last
    ///         accepted model.
    /// @param roundId the round
    /// @param by the account that abandoned it
    event RoundAbandoned(uint256 indexed roundId, address indexed by);

    /// @notice Open the next round on the global model `modelHash` stored at `modelCid`: the last
    ///         accepted round's result (`baseModelHash`). The previous round must be abandoned,
    ///         rejected, or finalized and accepted. The current policy sets the round's minimum
    ///         submissions, mode, reveal window, grace period and attestations; the current
    ///         validation set is the round's (`roundValidationHash`).
    /// @param modelHash content hash of the global model
    /// @param modelCid IPFS CID of the global model (1 to `MAX_CID_LENGTH` bytes)
    /// @param deadline last second (unix time) at which updates (commitments) are accepted:
    ///        from now + the policy's `minRoundSeconds` to now + its `maxRoundSeconds`
    /// @param quorum submissions that allow closing early (minimum submissions..active members)
    /// @return roundId the new round's id
    function openRound(bytes32 modelHash, string calldata modelCid, uint64 deadline, uint32 quorum)
        external
        returns (uint256 roundId);

    /// @notice Submit the caller's update for an open plain-mode round (once per member per round,
    ///         until the deadline inclusive).
    /// @param roundId the round
    /// @param updateHash content hash of the update's bytes on IPFS
    /// @param updateCid IPFS CID of the update (1 to `MAX_CID_LENGTH` bytes)
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata updateCid) external;

    /// @notice Commit to the caller's update in an open commit-reveal round (once per member per
    ///         round, until the deadline inclusive). Do not publish the update before revealing.
    /// @param roundId the round
    /// @param commitment `commitmentOf(msg.sender, roundId, updateHash, salt)` with a secret
    ///        random salt
    function commitUpdate(uint256 roundId, bytes32 commitment) external;

    /// @notice Reveal the committed update, after the deadline and until the reveal deadline
    ///         inclusive; emits `UpdateSubmitted` and counts as a submission.
    /// @param roundId the round
    /// @param updateHash content hash of the update's bytes on IPFS
    /// @param updateCid IPFS CID of the update (1 to `MAX_CID_LENGTH` bytes)
    /// @param salt the salt of the commitment
    function revealUpdate(
        uint256 roundId,
        bytes32 updateHash,
        string calldata updateCid,
        bytes32 salt
    ) external;

    /// @notice Stop accepting updates. Plain mode: at quorum, or for any count after the
    ///         deadline. Commit-reveal: after the deadline once every commitment is revealed and
    ///         the quorum is reached, or for any count after the reveal deadline.
    /// @param roundId the open round
    function closeRound(uint256 roundId) external;

    /// @notice Commit the round's result. Needs the round's minimum submissions; every flagged
    ///         bit must name a member that submitted (revealed) in the round. A finalized round
    ///         can never change.
    /// @param roundId the closed round
    /// @param resultHash content hash of the new global model
    /// @param resultCid IPFS CID of the new global model
    /// @param reportHash content hash of the round report
    /// @param reportCid IPFS CID of the round report
    /// @param flaggedBitmap bit i (word i/256, bit i%256) set for each rejected or flagged member index
    function finalizeRound(
        uint256 roundId,
        bytes32 resultHash,
        string calldata resultCid,
        bytes32 reportHash,
        string calldata reportCid,
        uint256[] calldata flaggedBitmap
    ) external;

    /// @notice Abandon an open or closed round: the operator at any time; anyone once
    ///         `abandonableAfter(roundId)` has passed, or once the round cannot reach its
    ///         minimum submissions any more (closed, or past its deadline (commit-reveal: past
    ///         the reveal deadline, or past the deadline with too few commitments), below it).
    /// @param roundId the round
    function abandonRound(uint256 roundId) external;

    /// @notice The protocol version nodes must speak: 2.
    function version() external pure returns (uint256);

    /// @notice The id of the latest round (0 before the first).
    function currentRound() external view returns (uint256);

    /// @notice The id of the latest round that was finalized (0 before the first), even if it
    ///         was rejected since or is not accepted yet: the model to build on is
    ///         `IFlemlAttestations.lastAcceptedRound`'s.
    function lastFinalizedRound() external view returns (uint256);

    /// @notice The model hash the next round must open on: the last accepted result; before
    ///         any, round 1's model; zero (any) before the first round.
    function baseModelHash() external view returns (bytes32);

    /// @notice A round's record, with the block that opened it (where the round's events start).
    /// @param roundId the round; a round that does not exist reads as all zeros (status `None`)
    function getRound(uint256 roundId) external view returns (Round memory);

    /// @notice The time after which anyone may abandon the round if it is still open or closed:
    ///         its deadline (commit-reveal: reveal deadline) plus its grace period.
    /// @param roundId the round (0 for a round that does not exist)
    function abandonableAfter(uint256 roundId) external view returns (uint256);

    /// @notice The latest round `member` submitted (revealed) to and the update hash it
    ///         committed there.
    /// @return roundId the round (0 if the member never submitted)
    /// @return updateHash the committed content hash
    function latestCommitment(address member)
        external
        view
        returns (uint256 roundId, bytes32 updateHash);

    /// @notice The latest commit-reveal round `member` committed in, and its commitment.
    /// @return roundId the round (0 if the member never committed)
    /// @return commitment the commitment
    function latestCommit(address member) external view returns (uint256 roundId, bytes32 commitment);

    /// @notice The commitment a member makes for `updateHash` in `roundId`:
    ///         `keccak256(abi.encode(member, roundId, updateHash, salt))`.
    function commitmentOf(address member, uint256 roundId, bytes32 updateHash, bytes32 salt)
        external
        pure
        returns (bytes32);

    /// @notice Whether `member` submitted (revealed) exactly `updateHash` in `roundId`: see
    ///         `CommitmentStatus`. Never reverts.
    function verifyCommitment(uint256 roundId, address member, bytes32 updateHash)
        external
        view
        returns (CommitmentStatus);

    /// @notice Whether `member` was rejected or flagged in the finalized round `roundId` (also
    ///         after the round was rejected: the flags are what its aggregator committed).
    function isFlagged(uint256 roundId, address member) external view returns (bool);

    /// @notice Whether the finalized round `roundId` committed `resultHash` and `reportHash` (also
    ///         after the round was rejected).
    function verifyResult(uint256 roundId, bytes32 resultHash, bytes32 reportHash)
        external
        view
        returns (bool);
}
