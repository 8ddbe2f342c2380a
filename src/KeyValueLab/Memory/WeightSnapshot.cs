using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Memory;

/// <summary>
/// Deep copies of chosen parameters (never views or aliases of the live weights), restorable bit for
/// bit. Edits between cases restore from one snapshot, so no edit leaks into the next case.
/// </summary>
/// <remarks>
/// Snapshots hold fp32 masters only. A named weight still kept in its stored dtype (<see cref="FrozenLinear"/>) is made
/// an fp32 master first (it is about to be edited); <see cref="TakeAll"/> leaves frozen weights out, since nothing can
/// change them without first making them masters.
/// </remarks>
public sealed class WeightSnapshot : IDisposable
{
    private readonly Dictionary<string, Tensor> _saved;

    private WeightSnapshot(Dictionary<string, Tensor> saved) => _saved = saved;

    /// <summary>The parameter names held.</summary>
    public IReadOnlyCollection<string> Names => _saved.Keys;

    /// <summary>The saved copy of one parameter (do not modify).</summary>
    public Tensor this[string name] => _saved[name];

    /// <summary>Copies the named parameters of <paramref name="model"/> (unknown names throw <see cref="ArgumentException"/>).</summary>
    public static WeightSnapshot Take(nn.Module model, IEnumerable<string> parameterNames)
    {
        var names = parameterNames.ToList();
        var frozen = FrozenLinear.FrozenIn(model).ToDictionary(f => f.Name + ".weight", f => f.Linear, StringComparer.Ordinal);
        foreach (string name in names)
            if (frozen.TryGetValue(name, out var linear)) FrozenLinear.MakeMaster(linear);
        var parameters = Parameters(model);
        var saved = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (string name in names)
            {
                if (saved.ContainsKey(name)) continue;
                if (!parameters.TryGetValue(name, out var p)) throw new ArgumentException($"the model has no parameter {name}", nameof(parameterNames));
                saved[name] = p.detach().clone().DetachFromDisposeScope();
            }
        }
        catch
        {
            foreach (var t in saved.Values) t.Dispose();
            throw;
        }
        return new WeightSnapshot(saved);
    }

    /// <summary>Copies every parameter of <paramref name="model"/> except the placeholders of frozen weights.</summary>
    public static WeightSnapshot TakeAll(nn.Module model)
    {
        var frozen = FrozenLinear.FrozenIn(model).Select(f => f.Name + ".weight").ToHashSet(StringComparer.Ordinal);
        return Take(model, model.named_parameters().Select(p => p.name).Where(n => !frozen.Contains(n)));
    }

    /// <summary>Writes the saved values back into <paramref name="model"/>'s parameters, in place (bit-exact).</summary>
    public void Restore(nn.Module model)
    {
        var parameters = Parameters(model);
        using var noGrad = no_grad();
        foreach (var (name, saved) in _saved)
        {
            if (!parameters.TryGetValue(name, out var p)) throw new ArgumentException($"the model has no parameter {name}", nameof(model));
            if (!p.shape.SequenceEqual(saved.shape)) throw new ArgumentException($"{name} is [{string.Join(", ", p.shape)}], the snapshot [{string.Join(", ", saved.shape)}]", nameof(model));
            p.copy_(saved);
        }
    }

    public void Dispose()
    {
        foreach (var t in _saved.Values) t.Dispose();
        _saved.Clear();
    }

    private static Dictionary<string, Parameter> Parameters(nn.Module model) =>
        model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
}
