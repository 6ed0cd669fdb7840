// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FLEML training rounds
/// @notice The round state machine: the aggregator opens a round on a global model, members commit
///         one update each before the deadline, the aggregator closes the round and finalizes it
///         with the new global model, the round report and the set of flagged members.
/// @dev Content hashes are sha256 of the exact bytes stored on IPFS (see fleml_node.storage).
///      Storage keeps what the chain reads: each round's hashes and counters, each member's latest
///      commitment and the flagged bits. Every commitment ever made, and the CIDs and flagged
///      bitmaps, are in events (`UpdateSubmitted` is indexed by round and member).
interface IFlemlRounds {
    /// @notice Lifecycle of a round. `None` means the round does not exist.
    enum RoundStatus {
        None,
        Open,
        Closed,
        Finalized
    }

    /// @notice A round's on-chain record.
    /// @dev `deadline` to `openedBlock` share one storage slot. Every event of round r lies in
    ///      blocks `openedBlock` of r to `openedBlock` of r + 1 (a round opens only after the
    ///      previous one is finalized), so a reader scans only the round's own blocks.
    struct Round {
        bytes32 modelHash; // hash of the global model the round trains on
        bytes32 resultHash; // hash of the new global model (set at finalization)
        bytes32 reportHash; // hash of the round report (set at finalization)
        uint64 deadline; // unix seconds; submissions are accepted until this time, inclusive
        uint32 quorum; // submissions that allow closing before the deadline
        uint32 submissions; // updates committed so far
        RoundStatus status;
        uint64 openedBlock; // block that opened the round: its events start there
    }

    /// @notice The caller is not the aggregator.
    error NotAggregator(address account);
    /// @notice No round with this id exists.
    error UnknownRound(uint256 roundId);
    /// @notice The round is not in the status the call needs.
    error WrongRoundStatus(uint256 roundId, RoundStatus status, RoundStatus required);
    /// @notice A new round can only open once the previous one is finalized.
    error PreviousRoundNotFinalized(uint256 roundId);
    /// @notice The deadline must lie in the future.
    error DeadlineNotInFuture(uint64 deadline, uint256 timestamp);
    /// @notice The submission deadline of the round has passed.
    error DeadlinePassed(uint256 roundId, uint64 deadline);
    /// @notice Quorum must be between 1 and the number of active members.
    error InvalidQuorum(uint32 quorum, uint32 activeMembers);
    /// @notice The member already committed an update in this round.
    error AlreadySubmitted(uint256 roundId, address member);
    /// @notice A content hash of zero is not a commitment.
    error EmptyHash();
    /// @notice A CID must not be empty.
    error EmptyCid();
    /// @notice The round cannot close yet: below quorum and before the deadline.
    error QuorumNotReached(uint256 roundId, uint32 submissions, uint32 quorum);
    /// @notice Storage holds a member's latest commitment only; older ones are in `UpdateSubmitted`.
    error CommitmentSuperseded(uint256 roundId, uint64 latestRound);
    /// @notice A round must train on the model the previous round finalized.
    error ModelNotPreviousResult(bytes32 modelHash, bytes32 previousResult);
    /// @notice The flagged bitmap sets a bit at or above the number of member slots.
    error UnknownMemberFlagged(uint256 lastWord, uint256 memberSlots);
    /// @notice The flagged bitmap has more words than there are member slots.
    error BitmapTooLong(uint256 words, uint256 maxWords);

    /// @notice A round opened on a global model.
    /// @param roundId the round's id (1, 2, ...)
    /// @param modelHash content hash of the global model
    /// @param modelCid IPFS CID of the global model
    /// @param deadline last second (unix time) at which updates are accepted
    /// @param quorum submissions that allow closing before the deadline
    event RoundOpened(
        uint256 indexed roundId, bytes32 modelHash, string modelCid, uint64 deadline, uint32 quorum
    );

    /// @notice A member committed its update for a round.
    /// @param roundId the round
    /// @param member the member's account
    /// @param updateHash content hash of the update's bytes on IPFS
    /// @param updateCid IPFS CID of the update
    event UpdateSubmitted(
        uint256 indexed roundId, address indexed member, bytes32 updateHash, string updateCid
    );

    /// @notice The round stopped accepting updates.
    /// @param roundId the round
    /// @param submissions the number of committed updates
    /// @param quorumReached whether the quorum was reached
    event RoundClosed(uint256 indexed roundId, uint32 submissions, bool quorumReached);

    /// @notice The round's result was committed; it can never change.
    /// @param roundId the round
    /// @param resultHash content hash of the new global model
    /// @param resultCid IPFS CID of the new global model
    /// @param reportHash content hash of the round report
    /// @param reportCid IPFS CID of the round report
    /// @param flaggedBitmap bit i of word i/256 set when the member with index i was rejected or flagged
    event RoundFinalized(
        uint256 indexed roundId,
        bytes32 resultHash,
        string resultCid,
        bytes32 reportHash,
        string reportCid,
        uint256[] flaggedBitmap
    );

    /// @notice Open the next round on the global model `modelHash` stored at `modelCid`;
    ///         after the first round it must be the previous round's finalized result.
    /// @param modelHash content hash of the global model
    /// @param modelCid IPFS CID of the global model
    /// @param deadline last second (unix time) at which updates are accepted
    /// @param quorum submissions that allow closing before the deadline (1..active members)
    /// @return roundId the new round's id
    function openRound(bytes32 modelHash, string calldata modelCid, uint64 deadline, uint32 quorum)
        external
        returns (uint256 roundId);

    /// @notice Commit the caller's update for an open round (once per member per round).
    /// @param roundId the round
    /// @param updateHash content hash of the update's bytes on IPFS
    /// @param updateCid IPFS CID of the update
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata updateCid) external;

    /// @notice Stop accepting updates: allowed at quorum, or for any count after the deadline.
    /// @param roundId the open round
    function closeRound(uint256 roundId) external;

    /// @notice Commit the round's result. A finalized round can never change.
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

    /// @notice The id of the latest round (0 before the first).
    function currentRound() external view returns (uint256);

    /// @notice A round's record, with the block that opened it (where the round's events start).
    /// @param roundId the round; a round that does not exist reads as all zeros (status `None`)
    function getRound(uint256 roundId) external view returns (Round memory);

    /// @notice The latest round `member` submitted to and the update hash it committed there.
    /// @return roundId the round (0 if the member never submitted)
    /// @return updateHash the committed content hash
    function latestCommitment(address member)
        external
        view
        returns (uint256 roundId, bytes32 updateHash);

    /// @notice Whether `member` committed exactly `updateHash` in `roundId`; false when it did not
    ///         submit to that round. Reverts with `CommitmentSuperseded` for a round older than the
    ///         member's latest submission: check that round's `UpdateSubmitted` event instead.
    function verifyCommitment(uint256 roundId, address member, bytes32 updateHash)
        external
        view
        returns (bool);

    /// @notice Whether `member` was rejected or flagged in the finalized round `roundId`.
    function isFlagged(uint256 roundId, address member) external view returns (bool);

    /// @notice Whether the finalized round `roundId` committed `resultHash` and `reportHash`.
    function verifyResult(uint256 roundId, bytes32 resultHash, bytes32 reportHash)
        external
        view
        returns (bool);
}
