namespace KeyValueLab.Organism;

/// <summary>
/// Sizes of a synthetic knowledge world. Everything in a world follows from these values and <see cref="Seed"/>;
/// the defaults give an organism that trains in a few minutes on two CPU cores.
/// </summary>
public sealed record WorldConfig
{
    /// <summary>Seed of every random choice (names, objects, phrasing splits, exports).</summary>
    public long Seed { get; init; } = 1;

    /// <summary>Number of invented subjects (people).</summary>
    public int Subjects { get; init; } = 60;

    /// <summary>Number of relations, the first of <see cref="RelationCatalog.All"/> (8–12).</summary>
    public int Relations { get; init; } = 10;

    /// <summary>Objects drawn per relation from its 20 candidates; each object is shared by about Subjects/ObjectsPerRelation subjects.</summary>
    public int ObjectsPerRelation { get; init; } = 12;

    /// <summary>Statement phrasings (of 8) in which each fact is written in the training corpus; the others are held out for evaluation.</summary>
    public int TrainedPhrasings { get; init; } = 5;

    /// <summary>CounterFact records to export.</summary>
    public int CounterFactCases { get; init; } = 500;

    /// <summary>zsRE records to export.</summary>
    public int ZsreCases { get; init; } = 500;

    /// <summary>Training examples per classification task (validation and test get <see cref="TaskEvalExamples"/> each).</summary>
    public int TaskTrainExamples { get; init; } = 1000;

    /// <summary>Validation and test examples per classification task.</summary>
    public int TaskEvalExamples { get; init; } = 200;

    /// <summary>Throws <see cref="ArgumentException"/> when a size is out of range.</summary>
    public void Validate()
    {
        Check(Subjects >= 4 && Subjects <= 100_000, nameof(Subjects), "must be in 4..100000");
        Check(Relations >= 1 && Relations <= RelationCatalog.All.Count, nameof(Relations), $"must be in 1..{RelationCatalog.All.Count}");
        Check(ObjectsPerRelation >= 2 && ObjectsPerRelation <= 20, nameof(ObjectsPerRelation), "must be in 2..20");
        Check(TrainedPhrasings >= 1 && TrainedPhrasings <= 6, nameof(TrainedPhrasings), "must be in 1..6 (at least two of the 8 phrasings stay held out)");
        Check(CounterFactCases >= 0 && ZsreCases >= 0 && TaskTrainExamples >= 0 && TaskEvalExamples >= 0, "export sizes", "must not be negative");
    }

    private static void Check(bool ok, string name, string problem)
    {
        if (!ok) throw new ArgumentException($"{name} {problem}");
    }
}
