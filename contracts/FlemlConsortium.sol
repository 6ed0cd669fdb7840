// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IFlemlRounds} from "../interfaces/IFlemlRounds.sol";
import {Membership} from "./Membership.sol";

/// @title FLEML consortium: membership, training rounds and update commitments
/// @notice One round at a time: the aggregator opens it on a global model, each active member
///         commits one update (content hash + IPFS CID) before the deadline, the aggregator closes
///         it at quorum or after the deadline and finalizes it with the new global model, the round
///         report and the flagged members. Finalized rounds never change.
/// @dev Gas. A submission touches three storage slots, each read and written once: the round's
///      packed counters, the member's record (membership and the last round it submitted to) and
///      the member's latest commitment. The commitment slot is reused round after round, so from a
///      member's second round on it is a non-zero to non-zero write (5,000 gas, not 22,100):
///      storage holds what the chain reads (the latest commitment of each member, which
///      `verifyCommitment` checks), and the full history of commitments is in `UpdateSubmitted`
///      events, indexed by round and member. CIDs and the flagged bitmap live in events;
///      finalization writes only the non-zero bitmap words (one word per 256 member slots), so
///      its cost does not grow with the member count.
contract FlemlConsortium is Membership, IFlemlRounds {
    uint256 private _currentRound;
    mapping(uint256 roundId => Round) private _rounds;
    mapping(address member => bytes32) private _latestCommitment;
    mapping(uint256 roundId => mapping(uint256 word => uint256)) private _flagged;

    modifier onlyAggregator() {
        _checkAggregator();
        _;
    }

    /// @inheritdoc IFlemlRounds
    function openRound(bytes32 modelHash, string calldata modelCid, uint64 deadline, uint32 quorum)
        external
        onlyAggregator
        returns (uint256 roundId)
    {
        uint256 previous = _currentRound;
        if (previous != 0) {
            Round storage last = _rounds[previous];
            if (last.status != RoundStatus.Finalized) revert PreviousRoundNotFinalized(previous);
            // rounds form a chain: each trains on the model the previous one finalized
            if (modelHash != last.resultHash) revert ModelNotPreviousResult(modelHash, last.resultHash);
        }
        if (modelHash == bytes32(0)) revert EmptyHash();
        if (bytes(modelCid).length == 0) revert EmptyCid();
        if (deadline <= block.timestamp) revert DeadlineNotInFuture(deadline, block.timestamp);
        uint32 active = activeMembers();
        if (quorum == 0 || quorum > active) revert InvalidQuorum(quorum, active);

        roundId = previous + 1;
        _currentRound = roundId;
        Round storage round = _rounds[roundId];
        round.modelHash = modelHash;
        round.deadline = deadline;
        round.quorum = quorum;
        round.status = RoundStatus.Open;
        round.openedBlock = uint64(block.number); // packed with deadline..status: no new slot
        emit RoundOpened(roundId, modelHash, modelCid, deadline, quorum);
    }

    /// @inheritdoc IFlemlRounds
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata updateCid)
        external
    {
        MemberRecord storage member = _memberRecord(msg.sender);
        if (!member.active) revert NotMember(msg.sender);
        Round storage round = _rounds[roundId];
        RoundStatus status = round.status;
        if (status != RoundStatus.Open) {
            if (status == RoundStatus.None) revert UnknownRound(roundId);
            revert WrongRoundStatus(roundId, status, RoundStatus.Open);
        }
        if (block.timestamp > round.deadline) revert DeadlinePassed(roundId, round.deadline);
        if (updateHash == bytes32(0)) revert EmptyHash();
        if (bytes(updateCid).length == 0) revert EmptyCid();
        if (member.lastRound == roundId) revert AlreadySubmitted(roundId, msg.sender);

        member.lastRound = uint64(roundId);
        _latestCommitment[msg.sender] = updateHash;
        round.submissions += 1;
        emit UpdateSubmitted(roundId, msg.sender, updateHash, updateCid);
    }

    /// @inheritdoc IFlemlRounds
    function closeRound(uint256 roundId) external onlyAggregator {
        Round storage round = _requireStatus(roundId, RoundStatus.Open);
        bool quorumReached = round.submissions >= round.quorum;
        if (!quorumReached && block.timestamp <= round.deadline) {
            revert QuorumNotReached(roundId, round.submissions, round.quorum);
        }
        round.status = RoundStatus.Closed;
        emit RoundClosed(roundId, round.submissions, quorumReached);
    }

    /// @inheritdoc IFlemlRounds
    function finalizeRound(
        uint256 roundId,
        bytes32 resultHash,
        string calldata resultCid,
        bytes32 reportHash,
        string calldata reportCid,
        uint256[] calldata flaggedBitmap
    ) external onlyAggregator {
        Round storage round = _requireStatus(roundId, RoundStatus.Closed);
        if (resultHash == bytes32(0) || reportHash == bytes32(0)) revert EmptyHash();
        if (bytes(resultCid).length == 0 || bytes(reportCid).length == 0) revert EmptyCid();
        uint256 slots = memberSlots();
        uint256 maxWords = (slots + 255) / 256;
        if (flaggedBitmap.length > maxWords) revert BitmapTooLong(flaggedBitmap.length, maxWords);
        // no bit may name a member index that does not exist (yet)
        if (flaggedBitmap.length == maxWords && maxWords != 0 && slots % 256 != 0
            && flaggedBitmap[maxWords - 1] >> (slots % 256) != 0) {
            revert UnknownMemberFlagged(flaggedBitmap[maxWords - 1], slots);
        }

        mapping(uint256 => uint256) storage flagged = _flagged[roundId];
        for (uint256 word = 0; word < flaggedBitmap.length; ++word) {
            if (flaggedBitmap[word] != 0) flagged[word] = flaggedBitmap[word];
        }
        round.resultHash = resultHash;
        round.reportHash = reportHash;
        round.status = RoundStatus.Finalized;
        emit RoundFinalized(roundId, resultHash, resultCid, reportHash, reportCid, flaggedBitmap);
    }

    /// @inheritdoc IFlemlRounds
    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    /// @inheritdoc IFlemlRounds
    function getRound(uint256 roundId) external view returns (Round memory) {
        return _rounds[roundId];
    }

    /// @inheritdoc IFlemlRounds
    function latestCommitment(address member)
        external
        view
        returns (uint256 roundId, bytes32 updateHash)
    {
        return (_memberRecord(member).lastRound, _latestCommitment[member]);
    }

    /// @inheritdoc IFlemlRounds
    function verifyCommitment(uint256 roundId, address member, bytes32 updateHash)
        external
        view
        returns (bool)
    {
        uint64 lastRound = _memberRecord(member).lastRound;
        if (roundId > lastRound) return false;
        if (roundId < lastRound) revert CommitmentSuperseded(roundId, lastRound);
        return updateHash != bytes32(0) && _latestCommitment[member] == updateHash;
    }

    /// @inheritdoc IFlemlRounds
    function isFlagged(uint256 roundId, address member) external view returns (bool) {
        MemberRecord storage record = _memberRecord(member);
        if (!record.known || _rounds[roundId].status != RoundStatus.Finalized) return false;
        uint32 index = record.index;
        return (_flagged[roundId][index / 256] >> (index % 256)) & 1 == 1;
    }

    /// @inheritdoc IFlemlRounds
    function verifyResult(uint256 roundId, bytes32 resultHash, bytes32 reportHash)
        external
        view
        returns (bool)
    {
        Round storage round = _rounds[roundId];
        return round.status == RoundStatus.Finalized && round.resultHash == resultHash
            && round.reportHash == reportHash;
    }

    function _requireStatus(uint256 roundId, RoundStatus required)
        private
        view
        returns (Round storage round)
    {
        round = _rounds[roundId];
        if (round.status != required) {
            if (round.status == RoundStatus.None) revert UnknownRound(roundId);
            revert WrongRoundStatus(roundId, round.status, required);
        }
    }

    function _checkAggregator() private view {
        if (msg.sender != aggregator()) revert NotAggregator(msg.sender);
    }
}
