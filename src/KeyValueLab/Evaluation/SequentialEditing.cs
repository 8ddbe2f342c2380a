using System.Diagnostics;
using KeyValueLab.Editing;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Evaluation;

/// <summary>How a sequence of edits on one model is scored.</summary>
public enum SequentialProtocol
{
    /// <summary>The published lifelong protocol (AlphaEdit's experiments/evaluate.py): all N records edited in chunks of B, then every one scored once on the final model.</summary>
    Final,

    /// <summary>Each chunk's cases scored right after that chunk's edit (B = 1: each case right after its own edit), never restored.</summary>
    Immediate,
}

/// <summary>The names of the sequential protocols in study files and on the command line.</summary>
public static class SequentialProtocols
{
    /// <summary>"sequential-final", "sequential-immediate", or the old "sequential" (= immediate; <paramref name="warn"/> gets a deprecation note).</summary>
    public static SequentialProtocol Parse(string name, Action<string>? warn = null)
    {
        switch (name.Trim().ToLowerInvariant())
        {
            case "sequential-final": return SequentialProtocol.Final;
            case "sequential-immediate": return SequentialProtocol.Immediate;
            case "sequential":
                warn?.Invoke("mode \"sequential\" is deprecated: it means sequential-immediate (each case scored right after its own edit); the published protocol is sequential-final");
                return SequentialProtocol.Immediate;
            default: throw new ArgumentException($"sequential mode must be sequential-final or sequential-immediate, not \"{name}\"");
        }
    }

    public static string Name(SequentialProtocol p) => p == SequentialProtocol.Final ? "sequential-final" : "sequential-immediate";
}

/// <summary>Settings of a sequential run.</summary>
public sealed record SequentialOptions
{
    /// <summary>B: requests per editor call (AlphaEdit's protocol: 100).</summary>
    public int ChunkSize { get; init; } = 100;

    /// <summary>M: with <see cref="SequentialProtocol.Final"/>, also score every case edited so far after each M edits (a multiple of B), for curves; null = only at the end.</summary>
    public int? CheckpointEvery { get; init; }

    /// <summary>Score by greedy generation too (<see cref="GenerationScorer"/>).</summary>
    public bool Generation { get; init; } = true;

    public int GenerationMargin { get; init; } = 3;

    /// <summary>Score every case on the unedited model first (the pre scores of the results); false saves one pass.</summary>
    public bool ScoreBeforeEdits { get; init; } = true;
}

/// <summary>One case of a sequential run: scores before any edit (null when not taken) and at the moment it was scored.</summary>
public sealed record SequentialCase(EditCase Case, CaseScores? Pre, CaseScores Post, CaseMetrics Metrics, GenerationMetrics? Generation);

/// <summary>Scores of every case edited so far, after <see cref="Edits"/> edits.</summary>
public sealed record SequentialCheckpoint(int Edits, IReadOnlyList<SequentialCase> Cases);

/// <summary>What a sequential run gives: the scored cases, the checkpoints (final protocol), seconds per editor call, the editor's log.</summary>
public sealed record SequentialResult(SequentialProtocol Protocol, IReadOnlyList<SequentialCase> Cases, IReadOnlyList<SequentialCheckpoint> Checkpoints,
    IReadOnlyList<double> ChunkSeconds, IReadOnlyList<EditReport> Reports, IReadOnlyList<string> Log);

/// <summary>
/// Many edits on one model without restoring it, scored by either protocol. This is library code the edit-eval
/// engine calls for the modes <c>sequential-final</c> and <c>sequential-immediate</c>; it writes nothing.
/// </summary>
public static class SequentialEditing
{
    /// <summary>Runs the sequence; <paramref name="prepared"/> = the caller has already run <see cref="IKnowledgeEditor.Prepare"/> on the unedited model.</summary>
    public static SequentialResult Run(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, IReadOnlyList<EditCase> cases,
        SequentialProtocol protocol, SequentialOptions options, CaseEvaluator evaluator,
        IProgress<WorkProgress>? progress = null, CancellationToken cancel = default, bool prepared = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ChunkSize, 1);
        if (options.CheckpointEvery is int m && (m < options.ChunkSize || m % options.ChunkSize != 0))
            throw new ArgumentException($"checkpoints every {m} edits must be a multiple of the chunk size {options.ChunkSize}");
        var generation = options.Generation ? new GenerationScorer(model, tokenizer, options.GenerationMargin) : null;
        int total = cases.Count;

        (editor as IEditHistory)?.ResetHistory();   // a run starts from clean state (SPEC §7, EasyEdit's leaking cache)
        var pre = new CaseScores?[total];
        var preAnswers = new GenerationAnswers?[total];
        for (int i = 0; i < total; i++)
        {
            cancel.ThrowIfCancellationRequested();
            if (options.ScoreBeforeEdits) pre[i] = evaluator.Measure(cases[i]);
            if (generation is not null) preAnswers[i] = generation.Generate(cases[i]);
            progress?.Report(new WorkProgress("sequential", i + 1, total, "before"));
        }
        var log = prepared ? [] : editor.Prepare(model, tokenizer).ToList();

        SequentialCase Score(int i)
        {
            var post = evaluator.Measure(cases[i]);
            var gen = generation is null ? null : GenerationScorer.Score(cases[i], preAnswers[i]!, generation.Generate(cases[i]));
            return new SequentialCase(cases[i], pre[i], post, CaseMetrics.From(post, cases[i].Format), gen);
        }

        var scored = new List<SequentialCase>();
        var checkpoints = new List<SequentialCheckpoint>();
        var seconds = new List<double>();
        var reports = new List<EditReport>();
        int done = 0;
        foreach (var chunk in cases.Select((c, i) => (c, i)).Chunk(options.ChunkSize))
        {
            cancel.ThrowIfCancellationRequested();
            var watch = Stopwatch.StartNew();
            reports.Add(editor.Apply(model, tokenizer, [.. chunk.Select(x => x.c.Request)]));
            seconds.Add(watch.Elapsed.TotalSeconds);
            done += chunk.Length;
            progress?.Report(new WorkProgress("sequential", done, total, "edit"));
            if (protocol == SequentialProtocol.Immediate)
                scored.AddRange(chunk.Select(x => Score(x.i)));
            else if (options.CheckpointEvery is int every && done % every == 0 && done < total)
                checkpoints.Add(new SequentialCheckpoint(done, [.. Enumerable.Range(0, done).Select(Score)]));
        }
        if (protocol == SequentialProtocol.Final)
        {
            scored.AddRange(Enumerable.Range(0, total).Select(i => { progress?.Report(new WorkProgress("sequential", i + 1, total, "final")); return Score(i); }));
            checkpoints.Add(new SequentialCheckpoint(total, scored));
        }
        return new SequentialResult(protocol, scored, checkpoints, seconds, reports, log);
    }
}
