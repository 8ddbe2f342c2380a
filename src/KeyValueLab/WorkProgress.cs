namespace KeyValueLab;

/// <summary>
/// How far a long job has come, reported through <see cref="IProgress{T}"/>: <see cref="Task"/> names the counter
/// ("study", "edit", "train"), <see cref="Done"/> of <see cref="Total"/> its steps, <see cref="Stage"/> what runs now.
/// Jobs report these records and one-line messages (an <c>Action&lt;string&gt;</c> log); drawing them is the caller's business.
/// </summary>
public sealed record WorkProgress(string Task, int Done, int Total, string Stage)
{
    /// <summary>Training loss of the last step, when the job trains.</summary>
    public double? Loss { get; init; }
    public double? LearningRate { get; init; }
    public double? TokensPerSecond { get; init; }
}
