"""Generative models: finding hidden variables that explain what is observed.

    from splitgrad.generative import VAE
    vae = VAE(latent_dim=2); vae.compile(); vae.fit(x, x, epochs=20)
    vae.sample(16); vae.interpolate(x[0], x[1]); vae.elbo(x_test)

| module | what it holds |
|---|---|
| autoencoder.py | `Autoencoder`: x → code → reconstruction, dense or convolutional |
| vae.py | `VAE`: μ and log σ², the reparameterisation trick, reconstruction + β·KL, sampling |
| gan.py | `GAN`: DCGAN-style generator and discriminator trained in turns, two optimizers |
| objectives.py | the maths, composed from existing ops: KL, reparameterisation, GAN losses |
| pictures.py | PNG grids: reconstructions, samples, latent traversals, latent scatter plots |
| _blocks.py, _base.py | the default networks; what the models share (loss parts as metrics) |

All three are Models (`@register`ed, so `model.save` / `splitgrad.load_model` round-trip them)
that train through `Model.fit`, the one training loop: the autoencoders through `compute_loss`,
the GAN through its own `train_step`. Subclass them to change a network or a loss.
"""

from . import pictures as pictures
from .autoencoder import Autoencoder as Autoencoder
from .gan import GAN as GAN
from .objectives import Tracker as Tracker
from .objectives import discriminator_loss as discriminator_loss
from .objectives import gaussian_kl as gaussian_kl
from .objectives import generator_loss as generator_loss
from .objectives import reparameterize as reparameterize
from .vae import VAE as VAE
