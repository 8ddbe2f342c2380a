using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Memory;

/// <summary>
/// Deep copies of chosen parameters (never views or aliases of the live weights), restorable bit for
/// bit. Edits between cases restore from one snapshot, so no edit leaks into the next case.
/// </summary>
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
        var parameters = Parameters(model);
        var saved = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (string name in parameterNames)
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

    /// <summary>Copies every parameter of <paramref name="model"/>.</summary>
    public static WeightSnapshot TakeAll(nn.Module model) => Take(model, model.named_parameters().Select(p => p.name));

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
