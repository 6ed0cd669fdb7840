// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IFlemlMembership} from "../interfaces/IFlemlMembership.sol";

/// @title Membership and roles of a FLEML consortium
/// @notice The operator (the deployer, transferable in two steps) admits and removes members
///         and appoints the aggregator. Members keep a permanent index and label.
/// @dev Abstract: `FlemlConsortium` inherits it so that `submitUpdate` checks membership with one
///      storage read instead of an external call (about 2,600 gas less per submission).
abstract contract Membership is IFlemlMembership {
    /// @notice Longest label, in bytes.
    uint256 public constant MAX_LABEL_LENGTH = 64;

    /// @dev One slot per member. `lastRound` (the latest round the member submitted or revealed
    ///      to) and `lastCommitRound` (the latest round it committed in) live here so that a
    ///      submission checks membership and "once per round" with one read.
    struct MemberRecord {
        bool known;
        bool active;
        uint32 index;
        uint64 lastRound;
        uint64 lastCommitRound;
    }

    address private _operator;
    address private _pendingOperator;
    address private _aggregator;
    uint32 private _memberSlots;
    uint32 private _activeMembers;
    mapping(address account => MemberRecord) private _members;
    mapping(uint32 index => address) private _memberAt;
    mapping(address account => string) private _labels;

    modifier onlyOperator() {
        _checkOperator();
        _;
    }

    constructor() {
        _operator = msg.sender;
        emit OperatorTransferred(address(0), msg.sender);
    }

    /// @inheritdoc IFlemlMembership
    function transferOperator(address newOperator) external onlyOperator {
        _pendingOperator = newOperator;
        emit OperatorTransferStarted(_operator, newOperator);
    }

    /// @inheritdoc IFlemlMembership
    function acceptOperator() external {
        if (msg.sender != _pendingOperator || msg.sender == address(0)) {
            revert NotPendingOperator(msg.sender);
        }
        address previous = _operator;
        _operator = msg.sender;
        delete _pendingOperator;
        emit OperatorTransferred(previous, msg.sender);
    }

    /// @inheritdoc IFlemlMembership
    function setAggregator(address newAggregator) external onlyOperator {
        if (newAggregator == address(0)) revert ZeroAddress();
        // the aggregator judges the members' updates: it must not be one of them
        if (_members[newAggregator].active) revert AggregatorIsMember(newAggregator);
        address previous = _aggregator;
        _aggregator = newAggregator;
        emit AggregatorSet(previous, newAggregator);
    }

    /// @inheritdoc IFlemlMembership
    function admitMember(address account, string calldata label) external onlyOperator {
        if (account == address(0)) revert ZeroAddress();
        if (account == _aggregator) revert MemberIsAggregator(account);
        uint256 length = bytes(label).length;
        if (length == 0 || length > MAX_LABEL_LENGTH) {
            revert InvalidLabel(length, MAX_LABEL_LENGTH);
        }
        MemberRecord memory record = _members[account];
        if (record.active) revert AlreadyMember(account);
        if (!record.known) {
            record.known = true;
            record.index = _memberSlots;
            _memberAt[record.index] = account;
            _memberSlots = record.index + 1;
        }
        record.active = true;
        _members[account] = record;
        _labels[account] = label;
        _activeMembers += 1;
        emit MemberAdmitted(account, record.index, label);
    }

    /// @inheritdoc IFlemlMembership
    function removeMember(address account) external onlyOperator {
        MemberRecord storage record = _members[account];
        if (!record.active) revert NotMember(account);
        record.active = false;
        _activeMembers -= 1;
        emit MemberRemoved(account, record.index);
    }

    /// @inheritdoc IFlemlMembership
    function operator() public view returns (address) {
        return _operator;
    }

    /// @inheritdoc IFlemlMembership
    function pendingOperator() external view returns (address) {
        return _pendingOperator;
    }

    /// @inheritdoc IFlemlMembership
    function aggregator() public view returns (address) {
        return _aggregator;
    }

    /// @inheritdoc IFlemlMembership
    function isMember(address account) external view returns (bool) {
        return _members[account].active;
    }

    /// @inheritdoc IFlemlMembership
    function memberInfo(address account)
        external
        view
        returns (bool known, bool active, uint32 index, string memory label)
    {
        MemberRecord memory record = _members[account];
        return (record.known, record.active, record.index, _labels[account]);
    }

    /// @inheritdoc IFlemlMembership
    function memberAt(uint32 index) external view returns (address) {
        return _memberAt[index];
    }

    /// @inheritdoc IFlemlMembership
    function memberSlots() public view returns (uint32) {
        return _memberSlots;
    }

    /// @inheritdoc IFlemlMembership
    function activeMembers() public view returns (uint32) {
        return _activeMembers;
    }

    /// @dev A member's record, for the round logic to read and update in place.
    function _memberRecord(address account) internal view returns (MemberRecord storage) {
        return _members[account];
    }

    /// @dev The account holding permanent index `index` (zero if none).
    function _memberAtIndex(uint256 index) internal view returns (address) {
        return _memberAt[uint32(index)];
    }

    function _checkOperator() internal view {
        if (msg.sender != _operator) revert NotOperator(msg.sender);
    }
}
