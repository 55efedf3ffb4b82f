"""kneuron.models.load: a handle's context length, read from its config."""
import pytest


@pytest.mark.parametrize("make,expected", [
    (lambda T: T.GPT2Config(n_positions=77), 77),                               # GPT-2's own field name
    (lambda T: T.BertConfig(max_position_embeddings=300), 300),
    (lambda T: T.RobertaConfig(max_position_embeddings=514, pad_token_id=1), 512),   # positions start after pad
    (lambda T: T.BloomConfig(), None),                                          # ALiBi: no limit in the config
    (lambda T: T.LlamaConfig(max_position_embeddings=32768, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1e4}), 131072),
    (lambda T: T.LlamaConfig(max_position_embeddings=131072, rope_parameters={        # Llama 3.1: already extended
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "rope_theta": 5e5}), 131072),
])
def test_context_length_from_config(make, expected):
    import transformers as T

    from kneuron.models.load import context_length
    assert context_length(make(T)) == expected


def test_handle_max_positions():
    from support.tiny import tiny_handle
    assert tiny_handle("gpt2").max_positions == 1024
    assert tiny_handle("opt").max_positions == 64         # OPT's learned positions: the config's number
    assert tiny_handle("bloom").max_positions is None
