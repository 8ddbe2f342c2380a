using System.CommandLine;
using KeyValueLab.Editing;
using KeyValueLab.Models;

namespace KeyValueLab.Cli.Commands;

/// <summary>Options shared by <c>kvlab edit</c> and <c>kvlab edit-eval</c>: which editor, where, and its statistics.</summary>
internal sealed class EditorOptions
{
    public Option<string> Method { get; } = new("--method") { Description = "Editor: ft, ft-l, rome, keyrome or memit.", DefaultValueFactory = _ => "ft" };
    public Option<string?> Side { get; } = new("--side") { Description = "keys, values or both (FT); default: the hyperparameter file's (ROME/MEMIT: values, Key-ROME: keys)." };
    public Option<string?> Layers { get; } = new("--layers") { Description = "Layers to edit, e.g. 5, 3-8 or 3,4,7; default: the hyperparameter file's (published for GPT-2 XL / GPT-J / Llama-7B)." };
    public Option<string?> KeyKinds { get; } = new("--key-kinds") { Description = "Llama keys: gate, up or both (default both)." };
    public Option<string?> Hparams { get; } = new("--hparams") { Description = "Hyperparameter JSON file (default: the shipped hparams/{METHOD}/{model_type}.json)." };
    public Option<string[]> Set { get; } = new("--set") { Description = "Override a hyperparameter: name=value (repeatable), e.g. --set v_num_grad_steps=40.", AllowMultipleArgumentsPerToken = false };
    public Option<string?> StatsCorpus { get; } = new("--stats-corpus") { Description = "Text for the second-moment statistics: 'generated' (the model's own samples) or a text file, one sample per line." };
    public Option<int?> StatsSamples { get; } = new("--stats-samples") { Description = "Corpus samples for the statistics (published: 100000; small values take seconds)." };
    public Option<int?> StatsTokens { get; } = new("--stats-tokens") { Description = "Tokens per statistics sample (default 128)." };
    public Option<string?> StatsDir { get; } = new("--stats-dir") { Description = "Statistics cache folder (default: $KVLAB_CACHE/stats, else ~/.cache/keyvaluelab/stats)." };

    public Option<int> Threads { get; } = new("--threads") { Description = "Torch CPU threads; 0 = libtorch's default. On a busy machine 1 is often much faster (OpenMP threads spin when cores are oversubscribed).", DefaultValueFactory = _ => 0 };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Threads, Method, Side, Layers, KeyKinds, Hparams, Set, StatsCorpus, StatsSamples, StatsTokens, StatsDir }) command.Options.Add(o);
    }

    public IKnowledgeEditor Create(ParseResult parse, CausalLM model)
    {
        int threads = parse.GetValue(Threads);
        if (threads < 0) throw new UsageException("--threads must be >= 0");
        if (threads > 0) TorchSharp.torch.set_num_threads(threads);
        string method = parse.GetValue(Method)!;
        HyperparameterOverrides overrides;
        try { overrides = HyperparameterOverrides.Parse(method, parse.GetValue(Set) ?? []); }
        catch (ArgumentException e) { throw new UsageException("--set " + e.Message); }
        try
        {
            var editor = EditorFactory.Create(model, new EditorChoice
            {
                Method = method,
                HparamsFile = parse.GetValue(Hparams),
                Overrides = overrides,
                Side = parse.GetValue(Side) is { } side ? EditScope.ParseSide(side) : null,
                Layers = parse.GetValue(Layers),
                KeyKinds = parse.GetValue(KeyKinds),
                StatsCorpus = parse.GetValue(StatsCorpus),
                StatsSamples = parse.GetValue(StatsSamples),
                StatsTokens = parse.GetValue(StatsTokens),
                StatsDir = parse.GetValue(StatsDir),
            });
            editor.ParameterNames(model);  // checks layers and key kinds against this model
            return editor;
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message + (e.Message.Contains("not a layer", StringComparison.Ordinal) ? "; the shipped layers are for GPT-2 XL / GPT-J / Llama-7B, pass --layers" : ""));
        }
    }
}
